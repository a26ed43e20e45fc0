#include <iostream>
#include <stdexcept>
int main() { long long a, b; std::cin >> a >> b; if (a + b != 0) throw std::runtime_error("boom"); }
