fn main() {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    for i in 0..64u8 {
        keep.push(vec![i.wrapping_add(1); 16 << 20]);
    }
    println!("{}", keep.len());
}
