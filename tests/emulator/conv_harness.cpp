// A torch-free driver of one convolution-forward launcher on the CPU executor, for the defect tests
// (tests/test_emulator_defects.py): random NHWC input, a (K, R, S, C) filter and a bias, a poisoned and
// guarded NHWC output, the launch, then a float64 check. Exit 0: right numbers; 1: wrong numbers; 2: the
// executor (or a guard band) reported a broken rule. Built with -DAK_LAUNCH=<launcher> -DAK_T=<element type>.
// Usage: n c h w k r s stride pad dilation sms
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <vector>

#include "ak_emu.h"
#include "conv_args.h"

using namespace accelkernels;

static float to_f(__half x) { return __half2float(x); }
static float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> static T from_f(float x);
template <> __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

int main(int argc, char** argv) {
  if (argc < 12) { std::fprintf(stderr, "usage: n c h w k r s stride pad dilation sms\n"); return 3; }
  int64_t v[10];
  for (int i = 0; i < 10; ++i) v[i] = std::atol(argv[1 + i]);
  const int64_t n = v[0], c = v[1], h = v[2], w = v[3], k = v[4], r = v[5], s = v[6], st = v[7], pad = v[8], dil = v[9];
  const int64_t p = (h + 2 * pad - dil * (r - 1) - 1) / st + 1, q = (w + 2 * pad - dil * (s - 1) - 1) / st + 1;
  ak_emu::settings().sm_count = std::atoi(argv[11]);
  ak_emu::settings().replay = true;  // a second, reversed thread order must give the same bits
  using T = AK_T;
  constexpr int64_t kGuard = 256;
  std::mt19937 gen(4321);
  std::normal_distribution<float> dist;
  std::vector<T> x(n * h * w * c), wt(k * r * s * c), bias(k);
  for (auto& e : x) e = from_f<T>(dist(gen));
  for (auto& e : wt) e = from_f<T>(dist(gen) / std::sqrt(static_cast<float>(c * r * s)));
  for (auto& e : bias) e = from_f<T>(dist(gen));
  std::vector<T> y(n * p * q * k + 2 * kGuard);
  std::memset(y.data(), 0xFF, y.size() * sizeof(T));
  ak_emu::register_global(x.data(), x.size() * sizeof(T), false, "x");
  ak_emu::register_global(wt.data(), wt.size() * sizeof(T), false, "weight");
  ak_emu::register_global(bias.data(), bias.size() * sizeof(T), false, "bias");
  ak_emu::register_global(y.data() + kGuard, n * p * q * k * sizeof(T), true, "y");
  ConvArgs<T> a{};
  a.x = x.data(); a.weight = wt.data(); a.y = y.data() + kGuard; a.bias = bias.data();
  a.n = n; a.c = c; a.h = h; a.w = w; a.k = k; a.p = p; a.q = q; a.r = r; a.s = s;
  a.stride_h = a.stride_w = st; a.pad_h = a.pad_w = pad; a.dil_h = a.dil_w = dil; a.groups = 1;
  const int64_t xs[4] = {h * w * c, 1, w * c, c}, ws[4] = {r * s * c, 1, s * c, c}, ys[4] = {p * q * k, 1, q * k, k};
  for (int i = 0; i < 4; ++i) { a.x_stride[i] = xs[i]; a.w_stride[i] = ws[i]; a.y_stride[i] = ys[i]; }
  a.activation = Activation::kNone;
  try {
    AK_LAUNCH(a, nullptr);
  } catch (const std::exception& e) {
    std::printf("REPORT %s\n", e.what());
    return 2;
  }
  for (int64_t i = 0; i < kGuard; ++i) {
    uint8_t lo[sizeof(T)], hi[sizeof(T)];
    std::memcpy(lo, &y[i], sizeof(T));
    std::memcpy(hi, &y[kGuard + n * p * q * k + i], sizeof(T));
    for (size_t j = 0; j < sizeof(T); ++j)
      if (lo[j] != 0xFF || hi[j] != 0xFF) { std::printf("REPORT out-of-bounds global store next to y\n"); return 2; }
  }
  double worst = 0;
  bool bad = false;
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ip = 0; ip < p; ++ip)
      for (int64_t iq = 0; iq < q; ++iq)
        for (int64_t ik = 0; ik < k; ++ik) {
          double ref = to_f(bias[ik]), mag = std::fabs(ref);
          for (int64_t ir = 0; ir < r; ++ir)
            for (int64_t is = 0; is < s; ++is) {
              const int64_t ih = ip * st - pad + ir * dil, iw = iq * st - pad + is * dil;
              if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
              for (int64_t ic = 0; ic < c; ++ic) {
                const double prod = static_cast<double>(to_f(x[((in * h + ih) * w + iw) * c + ic])) *
                                    to_f(wt[((ik * r + ir) * s + is) * c + ic]);
                ref += prod;
                mag += std::fabs(prod);
              }
            }
          const double got = to_f(a.y[((in * p + ip) * q + iq) * k + ik]);
          const double err = std::fabs(got - ref);
          if (!(err <= 1e-2 * mag + 1e-6)) bad = true;
          if (err > worst || std::isnan(err)) worst = std::isnan(err) ? INFINITY : err;
        }
  std::printf("%s max error %g\n", bad ? "WRONG" : "OK", worst);
  return bad ? 1 : 0;
}
