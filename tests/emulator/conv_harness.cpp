// A torch-free driver of the wgmma convolution launchers on the CPU executor, for the defect tests
// (tests/test_emulator_defects.py). forward: random NHWC x, a (K, R, S, C/groups) filter and a bias, a poisoned
// and guarded NHWC y. input_grad: random NHWC dy, the regrouped filter Wt (C, R, S, K/groups) (conv_args.h), a
// poisoned and guarded NHWC dx. weight_grad: random NHWC x and dy, a poisoned and guarded dw (K, R, S, C/groups)
// and a NaN-poisoned fp32 workspace of `splits` slices. Then the launch and a float64 check. Exit 0: right
// numbers; 1: wrong numbers; 2: the executor (or a guard band) reported a broken rule. Built with -DAK_T=<type>.
// Usage: n c h w k r s stride pad dilation sms [forward|input_grad|weight_grad [groups [splits]]]
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <string>
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
  if (argc < 12) {
    std::fprintf(stderr, "usage: n c h w k r s stride pad dilation sms [forward|input_grad|weight_grad [groups [splits]]]\n");
    return 3;
  }
  int64_t v[10];
  for (int i = 0; i < 10; ++i) v[i] = std::atol(argv[1 + i]);
  const int64_t n = v[0], c = v[1], h = v[2], w = v[3], k = v[4], r = v[5], s = v[6], st = v[7], pad = v[8], dil = v[9];
  const std::string pass = argc > 12 ? argv[12] : "forward";
  const bool input_grad = pass == "input_grad", weight_grad = pass == "weight_grad";
  const int64_t groups = argc > 13 ? std::atol(argv[13]) : 1, cg = c / groups, kg = k / groups;
  const int64_t splits = argc > 14 ? std::atol(argv[14]) : 1;
  const int64_t p = (h + 2 * pad - dil * (r - 1) - 1) / st + 1, q = (w + 2 * pad - dil * (s - 1) - 1) / st + 1;
  ak_emu::settings().sm_count = std::atoi(argv[11]);
  ak_emu::settings().replay = true;  // a second, reversed thread order must give the same bits
  using T = AK_T;
  constexpr int64_t kGuard = 256;
  std::mt19937 gen(4321);
  std::normal_distribution<float> dist;
  // The read tensors: forward x (n, h, w, c) and weight (k, r, s, cg); input_grad dy (n, p, q, k) and Wt (c, r, s, kg);
  // weight_grad x as `in` and dy as `filter`, dw (k, r, s, cg) written.
  const int64_t in_count = input_grad ? n * p * q * k : n * h * w * c;
  const int64_t out_count = input_grad ? n * h * w * c : weight_grad ? k * r * s * cg : n * p * q * k;
  const int64_t reduce = input_grad ? kg : cg;
  std::vector<T> in(in_count), filter(weight_grad ? n * p * q * k : (input_grad ? c : k) * r * s * reduce), bias(k);
  for (auto& e : in) e = from_f<T>(dist(gen));
  for (auto& e : filter) e = from_f<T>(dist(gen) / std::sqrt(static_cast<float>(weight_grad ? n * p * q : reduce * r * s)));
  for (auto& e : bias) e = from_f<T>(dist(gen));
  std::vector<T> out(out_count + 2 * kGuard);
  std::memset(out.data(), 0xFF, out.size() * sizeof(T));
  std::vector<float> workspace(weight_grad ? splits * out_count : 0, std::nanf(""));
  ak_emu::register_global(in.data(), in.size() * sizeof(T), false, input_grad ? "dy" : "x");
  ak_emu::register_global(filter.data(), filter.size() * sizeof(T), false, weight_grad ? "dy" : "weight");
  ak_emu::register_global(bias.data(), bias.size() * sizeof(T), false, "bias");
  ak_emu::register_global(out.data() + kGuard, out_count * sizeof(T), true,
                          input_grad ? "dx" : weight_grad ? "dw" : "y");
  if (weight_grad) ak_emu::register_global(workspace.data(), workspace.size() * sizeof(float), true, "workspace");
  T* result = out.data() + kGuard;
  ConvArgs<T> a{};
  a.x = input_grad ? result : in.data();
  a.y = input_grad ? in.data() : weight_grad ? filter.data() : result;
  a.weight = weight_grad ? result : filter.data();
  a.bias = input_grad || weight_grad ? nullptr : bias.data();
  a.workspace = weight_grad ? workspace.data() : nullptr;
  a.splits = splits;
  a.n = n; a.c = c; a.h = h; a.w = w; a.k = k; a.p = p; a.q = q; a.r = r; a.s = s;
  a.stride_h = a.stride_w = st; a.pad_h = a.pad_w = pad; a.dil_h = a.dil_w = dil; a.groups = groups;
  const int64_t xs[4] = {h * w * c, 1, w * c, c}, ys[4] = {p * q * k, 1, q * k, k};
  const int64_t ws[4] = {r * s * reduce, 1, s * reduce, reduce};
  for (int i = 0; i < 4; ++i) { a.x_stride[i] = xs[i]; a.w_stride[i] = ws[i]; a.y_stride[i] = ys[i]; }
  a.activation = Activation::kNone;
  try {
#ifdef AK_CONV_WEIGHT_GRAD  // linked with conv2d_wgmma_weight_grad.cu: that pass only
    if (!weight_grad) {
      std::fprintf(stderr, "this build runs weight_grad only\n");
      return 3;
    }
    launch_conv2d_wgmma_weight_grad<T>(a, nullptr);
#else  // linked with conv2d_wgmma.cu
    if (weight_grad) {
      std::fprintf(stderr, "this build runs forward and input_grad only\n");
      return 3;
    }
    if (input_grad) {
      launch_conv2d_wgmma_input_grad<T>(a, nullptr);
    } else {
      launch_conv2d_wgmma<T>(a, nullptr);
    }
#endif
  } catch (const std::exception& e) {
    std::printf("REPORT %s\n", e.what());
    return 2;
  }
  for (int64_t i = 0; i < kGuard; ++i) {
    uint8_t lo[sizeof(T)], hi[sizeof(T)];
    std::memcpy(lo, &out[i], sizeof(T));
    std::memcpy(hi, &out[kGuard + out_count + i], sizeof(T));
    for (size_t j = 0; j < sizeof(T); ++j)
      if (lo[j] != 0xFF || hi[j] != 0xFF) { std::printf("REPORT out-of-bounds global store next to the output\n"); return 2; }
  }
  // The float64 oracle: every (output pixel, tap, input pixel) triple of the forward, summed into the pass's result.
  std::vector<double> ref(out_count, 0.0), mag(out_count, 0.0);
  for (int64_t in_ = 0; in_ < n; ++in_)
    for (int64_t ip = 0; ip < p; ++ip)
      for (int64_t iq = 0; iq < q; ++iq)
        for (int64_t ir = 0; ir < r; ++ir)
          for (int64_t is = 0; is < s; ++is) {
            const int64_t ih = ip * st - pad + ir * dil, iw = iq * st - pad + is * dil;
            if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
            for (int64_t ik = 0; ik < k; ++ik) {
              const int64_t g = ik / kg, kk = ik % kg;
              for (int64_t cc = 0; cc < cg; ++cc) {
                const int64_t ic = g * cg + cc;
                const int64_t yi = ((in_ * p + ip) * q + iq) * k + ik, xi = ((in_ * h + ih) * w + iw) * c + ic;
                if (input_grad) {
                  const double prod = static_cast<double>(to_f(in[yi])) * to_f(filter[((ic * r + ir) * s + is) * kg + kk]);
                  ref[xi] += prod, mag[xi] += std::fabs(prod);
                } else if (weight_grad) {
                  const int64_t wi = ((ik * r + ir) * s + is) * cg + cc;
                  const double prod = static_cast<double>(to_f(in[xi])) * to_f(filter[yi]);
                  ref[wi] += prod, mag[wi] += std::fabs(prod);
                } else {
                  const double prod = static_cast<double>(to_f(in[xi])) * to_f(filter[((ik * r + ir) * s + is) * cg + cc]);
                  ref[yi] += prod, mag[yi] += std::fabs(prod);
                }
              }
            }
          }
  double worst = 0;
  bool bad = false;
  for (int64_t i = 0; i < out_count; ++i) {
    const bool no_bias = input_grad || weight_grad;
    const double want = no_bias ? ref[i] : ref[i] + to_f(bias[i % k]);
    const double err = std::fabs(to_f(result[i]) - want);
    if (!(err <= 1e-2 * (mag[i] + (no_bias ? 0.0 : std::fabs(to_f(bias[i % k])))) + 1e-6)) bad = true;
    if (err > worst || std::isnan(err)) worst = std::isnan(err) ? INFINITY : err;
  }
  std::printf("%s max error %g\n", bad ? "WRONG" : "OK", worst);
  return bad ? 1 : 0;
}
