// A torch-free driver of one GEMM launcher on the CPU executor, for the defect tests
// (tests/test_emulator_defects.py): random operands, a poisoned and guarded output, the launch,
// then a float64 check. Exit 0: right numbers; 1: wrong numbers; 2: the executor (or a guard band)
// reported a broken rule. Built with -DAK_LAUNCH=<launcher> -DAK_T=<element type>.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <vector>

#include "ak_emu.h"
#include "bmm_args.h"

using namespace accelkernels;

static float to_f(float x) { return x; }
static float to_f(__half x) { return __half2float(x); }
static float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> static T from_f(float x);
template <> float from_f<float>(float x) { return x; }
template <> __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

int main(int argc, char** argv) {
  if (argc < 8) { std::fprintf(stderr, "usage: batch m n k a_kcontig b_kcontig sms\n"); return 3; }
  const int64_t batch = std::atol(argv[1]), m = std::atol(argv[2]), n = std::atol(argv[3]), k = std::atol(argv[4]);
  const bool a_k = std::atoi(argv[5]) != 0, b_k = std::atoi(argv[6]) != 0;
  ak_emu::settings().sm_count = std::atoi(argv[7]);
  ak_emu::settings().replay = true;  // a second, reversed thread order must give the same bits
  using T = AK_T;
  constexpr int64_t kGuard = 256;
  std::mt19937 gen(1234);
  std::normal_distribution<float> dist;
  std::vector<T> a(batch * m * k), b(batch * k * n), bias(n);
  for (auto& v : a) v = from_f<T>(dist(gen));
  for (auto& v : b) v = from_f<T>(dist(gen));
  for (auto& v : bias) v = from_f<T>(dist(gen));
  std::vector<T> c(batch * m * n + 2 * kGuard);
  std::memset(c.data(), 0xFF, c.size() * sizeof(T));
  ak_emu::register_global(a.data(), a.size() * sizeof(T), false, "a");
  ak_emu::register_global(b.data(), b.size() * sizeof(T), false, "b");
  ak_emu::register_global(bias.data(), bias.size() * sizeof(T), false, "bias");
  ak_emu::register_global(c.data() + kGuard, batch * m * n * sizeof(T), true, "c");
  BmmArgs<T> p{};
  p.a = a.data(); p.b = b.data(); p.bias = bias.data(); p.c = c.data() + kGuard;
  p.batch = batch; p.m = m; p.n = n; p.k = k;
  p.a_stride_batch = m * k;
  p.a_stride_m = a_k ? k : 1;
  p.a_stride_k = a_k ? 1 : m;
  p.b_stride_batch = k * n;
  p.b_stride_k = b_k ? 1 : n;
  p.b_stride_n = b_k ? k : 1;
  p.activation = Activation::kNone;
  try {
    AK_LAUNCH(p, nullptr);
  } catch (const std::exception& e) {
    std::printf("REPORT %s\n", e.what());
    return 2;
  }
  for (int64_t i = 0; i < kGuard; ++i) {
    uint8_t lo[sizeof(T)], hi[sizeof(T)];
    std::memcpy(lo, &c[i], sizeof(T));
    std::memcpy(hi, &c[kGuard + batch * m * n + i], sizeof(T));
    for (size_t j = 0; j < sizeof(T); ++j)
      if (lo[j] != 0xFF || hi[j] != 0xFF) { std::printf("REPORT out-of-bounds global store next to c\n"); return 2; }
  }
  double worst = 0;
  bool bad = false;
  for (int64_t bt = 0; bt < batch; ++bt)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double ref = to_f(bias[j]), mag = std::fabs(ref);
        for (int64_t kk = 0; kk < k; ++kk) {
          const double x = to_f(a[bt * m * k + i * p.a_stride_m + kk * p.a_stride_k]);
          const double y = to_f(b[bt * k * n + kk * p.b_stride_k + j * p.b_stride_n]);
          ref += x * y;
          mag += std::fabs(x * y);
        }
        const double got = to_f(p.c[(bt * m + i) * n + j]);
        const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-2) * mag + 1e-6;  // rounding of the output and the sum
        const double err = std::fabs(got - ref);
        if (!(err <= tol)) bad = true;
        if (err > worst || std::isnan(err)) worst = std::isnan(err) ? INFINITY : err;
      }
  std::printf("%s max error %g\n", bad ? "WRONG" : "OK", worst);
  return bad ? 1 : 0;
}
