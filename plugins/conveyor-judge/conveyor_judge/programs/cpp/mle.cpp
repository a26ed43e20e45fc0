#include <vector>
#include <cstdio>
int main() { std::vector<std::vector<char>> v; for (int i = 0; i < 64; i++) v.emplace_back(16 << 20, (char)i); std::printf("%zu\n", v.size()); }
