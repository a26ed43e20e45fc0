import java.util.*;

public class Main {
    public static void main(String[] args) {
        List<long[]> keep = new ArrayList<>();
        for (int i = 0; i < 256; i++) { long[] a = new long[1 << 21]; Arrays.fill(a, i); keep.add(a); }
        System.out.println(keep.size());
    }
}
