// What the PTX probes (ptx_probe.cu, ptx_probe_sm90.cu) share: printing a row of values for
// tests/test_emulator_ptx.py, and the matrix values that test recomputes.
#pragma once

#include <cstdio>
#include <vector>

// One line: the row's name, then its values.
template <typename V>
void print(const char* name, const std::vector<V>& v) {
  std::printf("%s", name);
  for (const auto& x : v) std::printf(" %.9g", static_cast<double>(x));
  std::printf("\n");
}

// Matrix element values the tests recompute: small integers, exact in bf16/fp16 products.
inline float a_value(int m, int k) { return static_cast<float>((m * 3 + k * 5) % 7 - 3); }
inline float b_value(int k, int n) { return static_cast<float>((k * 2 + n * 3) % 5 - 2); }
