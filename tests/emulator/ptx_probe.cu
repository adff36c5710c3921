// Unit probes of the executor's PTX handlers, independent of our kernels' data flow: each probe
// runs one instruction family on known inputs through the kernels' own wrappers (mma_sync_tile.cuh,
// bmm_wgmma.cu) and prints what each lane / shared byte ended up holding; tests/test_emulator_ptx.py
// compares that with tables computed from the PTX ISA / CuTe layouts (../shared/EMULATION.md §1).
// Compiled for the CPU executor only (tests/test_emulator_ptx.py), never by nvcc.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "probe_output.h"

#include "bmm_wgmma.cu"  // its anonymous-namespace helpers (mbarrier, TMA, descriptors, wgmma)
#include "mma_sync_tile.cuh"

namespace probe {

using namespace accelkernels;

__global__ void ldmatrix_probe(uint32_t* out, int trans) {
  __shared__ __align__(16) uint16_t tile[4][8][8];  // element (j, row, col) = 64 j + 8 row + col
  const int l = threadIdx.x;
  for (int i = l; i < 256; i += 32) (&tile[0][0][0])[i] = static_cast<uint16_t>(i);
  __syncthreads();
  unsigned r[4];
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(&tile[l >> 3][l & 7][0]));
  if (trans) mma_tile::ldmatrix_x4<true>(addr, r);
  else mma_tile::ldmatrix_x4<false>(addr, r);
  for (int j = 0; j < 4; ++j) out[l * 4 + j] = r[j];
}

template <typename T>
__global__ void mma_probe(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  const int l = threadIdx.x;
  const unsigned af[4] = {a[l * 4], a[l * 4 + 1], a[l * 4 + 2], a[l * 4 + 3]};
  float acc[4] = {c[l * 4], c[l * 4 + 1], c[l * 4 + 2], c[l * 4 + 3]};
  mma_tile::mma_16816<T>(acc, af, b[l * 2], b[l * 2 + 1]);
  for (int e = 0; e < 4; ++e) d[l * 4 + e] = acc[e];
}

// Three groups of copies into distinct 16-byte slots (src-size 16, 5, 0), then wait_group 1: the
// first two groups have landed, the last is still poison.
__global__ void cp_async_probe(const uint8_t* src, uint8_t* out) {
  __shared__ __align__(16) uint8_t slots[3][16];
  const unsigned base = static_cast<unsigned>(__cvta_generic_to_shared(&slots[0][0]));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(base), "l"(src), "r"(16));
  mma_tile::cp_async_commit();
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(base + 16), "l"(src + 16), "r"(5));
  mma_tile::cp_async_commit();
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(base + 32), "l"(src + 32), "r"(0));
  mma_tile::cp_async_commit();
  mma_tile::cp_async_wait<1>();
  for (int i = 0; i < 48; ++i) out[i] = slots[i / 16][i % 16];  // the third slot is read before its wait: poison
  mma_tile::cp_async_wait<0>();
  for (int i = 0; i < 16; ++i) out[48 + i] = slots[2][i];
}

// A fresh mbarrier: try_wait.parity 1 succeeds at once (the "preceding phase"), parity 0 only after
// the phase completes.
__global__ void mbarrier_probe(uint32_t* out) {
  __shared__ __align__(8) uint64_t bar;
  if (threadIdx.x == 0) {
    mbar_init(&bar, 2);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  mbar_wait(&bar, 1);  // returns at once
  out[threadIdx.x] = 1;
  mbar_arrive(&bar);
  mbar_wait(&bar, 0);  // both threads arrived: phase 0 complete
  out[2 + threadIdx.x] = 1;
}

// A TMA box (rows x 64 bf16, 128-byte swizzle) at coordinates (k0, row0), raw shared image out.
__global__ void tma_probe(const __grid_constant__ CUtensorMap map, int k0, int row0, int rows, uint8_t* out) {
  extern __shared__ __align__(1024) unsigned char smem[];
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 128 * rows);
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    mbar_expect_tx(bar, 128 * rows);
    tma_load(smem, &map, k0, row0, 0, bar);
  }
  __syncthreads();
  mbar_wait(bar, 0);
  for (int i = threadIdx.x; i < 128 * rows; i += blockDim.x) out[i] = smem[i];
}

// One wgmma m64n128k16 on A (64 x 16) and B (128 x 16) loaded by TMA into 128B-swizzled tiles.
__global__ void wgmma_probe(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                            float* out) {
  extern __shared__ __align__(1024) unsigned char smem[];
  unsigned char* a_tile = smem;              // 64 rows x 128 B
  unsigned char* b_tile = smem + 64 * 128;   // 128 rows x 128 B (1024-aligned)
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 192 * 128);
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    mbar_expect_tx(bar, 192 * 128);
    tma_load(a_tile, &map_a, 0, 0, 0, bar);
    tma_load(b_tile, &map_b, 0, 0, 0, bar);
  }
  __syncthreads();
  mbar_wait(bar, 0);
  float d[64];
  for (int i = 0; i < 64; ++i) d[i] = 1.0f;  // accumulate onto ones (scale-d = 1)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
  wgmma_m64n128k16<__nv_bfloat16>(d, matrix_descriptor(a_tile), matrix_descriptor(b_tile));
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  for (int i = 0; i < 64; ++i) out[threadIdx.x * 64 + i] = d[i];
}

}  // namespace probe

using namespace probe;

uint32_t pack(float lo, float hi, bool bf16) {
  uint16_t l, h;
  if (bf16) {
    const __nv_bfloat16 x = __float2bfloat16_rn(lo), y = __float2bfloat16_rn(hi);
    std::memcpy(&l, &x, 2);
    std::memcpy(&h, &y, 2);
  } else {
    const __half x = __float2half_rn(lo), y = __float2half_rn(hi);
    std::memcpy(&l, &x, 2);
    std::memcpy(&h, &y, 2);
  }
  return uint32_t{l} | (uint32_t{h} << 16);
}

CUtensorMap bf16_map(const __nv_bfloat16* base, uint64_t k, uint64_t rows, uint32_t box_rows) {
  CUtensorMap map{};
  void* fn = nullptr;
  cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, 0, nullptr);
  auto encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  const cuuint64_t dims[3] = {k, rows, 1}, strides[2] = {k * 2, k * rows * 2};
  const cuuint32_t box[3] = {64, box_rows, 1}, es[3] = {1, 1, 1};
  if (encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<__nv_bfloat16*>(base), dims, strides, box, es,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    std::printf("encode failed\n");
  return map;
}

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "";
  try {
    if (what == "ldmatrix") {
      for (int trans = 0; trans < 2; ++trans) {
        std::vector<uint32_t> out(128);
        ldmatrix_probe<<<1, 32>>>(out.data(), trans);
        print(trans ? "trans" : "plain", out);
      }
    } else if (what == "mma") {
      for (int bf16 = 0; bf16 < 2; ++bf16) {
        std::vector<uint32_t> a(128), b(64);
        std::vector<float> c(128), d(128);
        for (int l = 0; l < 32; ++l) {  // registers filled per the PTX fragment table
          const int g = l >> 2, t = l & 3;
          a[l * 4 + 0] = pack(a_value(g, 2 * t), a_value(g, 2 * t + 1), bf16);
          a[l * 4 + 1] = pack(a_value(g + 8, 2 * t), a_value(g + 8, 2 * t + 1), bf16);
          a[l * 4 + 2] = pack(a_value(g, 2 * t + 8), a_value(g, 2 * t + 9), bf16);
          a[l * 4 + 3] = pack(a_value(g + 8, 2 * t + 8), a_value(g + 8, 2 * t + 9), bf16);
          b[l * 2 + 0] = pack(b_value(2 * t, g), b_value(2 * t + 1, g), bf16);
          b[l * 2 + 1] = pack(b_value(2 * t + 8, g), b_value(2 * t + 9, g), bf16);
          for (int e = 0; e < 4; ++e) c[l * 4 + e] = static_cast<float>(l * 4 + e) * 0.5f;
        }
        if (bf16) mma_probe<__nv_bfloat16><<<1, 32>>>(a.data(), b.data(), c.data(), d.data());
        else mma_probe<__half><<<1, 32>>>(a.data(), b.data(), c.data(), d.data());
        print(bf16 ? "bf16" : "f16", d);
      }
    } else if (what == "cp_async") {
      alignas(16) uint8_t src[48];
      for (int i = 0; i < 48; ++i) src[i] = static_cast<uint8_t>(i + 1);
      std::vector<uint8_t> out(64);
      ak_emu::register_global(src, sizeof(src), false, "src");
      cp_async_probe<<<1, 1>>>(src, out.data());
      print("bytes", out);
    } else if (what == "mbarrier") {
      std::vector<uint32_t> out(4);
      mbarrier_probe<<<1, 2>>>(out.data());
      print("flags", out);
    } else if (what == "tma") {  // a 20 x 40 bf16 matrix, element (row, k) = row * 100 + k
      const int rows = 20, cols = 40;
      std::vector<__nv_bfloat16> m(rows * cols);
      for (int r = 0; r < rows; ++r)
        for (int k = 0; k < cols; ++k) m[r * cols + k] = __float2bfloat16_rn(static_cast<float>(r * 100 + k));
      alignas(16) static __nv_bfloat16 buf[800];
      std::memcpy(buf, m.data(), sizeof(buf));
      const CUtensorMap map = bf16_map(buf, cols, rows, 16);
      std::vector<uint8_t> out(128 * 16);
      cudaFuncSetAttribute(tma_probe, cudaFuncAttributeMaxDynamicSharedMemorySize, 4096);
      tma_probe<<<1, 32, 128 * 16 + 1024>>>(map, -8, 12, 16, out.data());  // partly outside on three sides
      print("image", out);
    } else if (what == "wgmma") {
      alignas(16) static __nv_bfloat16 a[64 * 16], b[128 * 16];
      for (int m = 0; m < 64; ++m)
        for (int k = 0; k < 16; ++k) a[m * 16 + k] = __float2bfloat16_rn(a_value(m, k));
      for (int n = 0; n < 128; ++n)
        for (int k = 0; k < 16; ++k) b[n * 16 + k] = __float2bfloat16_rn(b_value(k, n));
      // K = 16 of a 64-wide box: the rest of each 128-byte row is zero-filled by TMA.
      const CUtensorMap ma = bf16_map(a, 16, 64, 64), mb = bf16_map(b, 16, 128, 128);
      std::vector<float> out(128 * 64);
      cudaFuncSetAttribute(wgmma_probe, cudaFuncAttributeMaxDynamicSharedMemorySize, 192 * 128 + 1024);
      wgmma_probe<<<1, 128, 192 * 128 + 1024>>>(ma, mb, out.data());
      print("d", out);
    } else {
      std::printf("unknown probe\n");
      return 3;
    }
  } catch (const std::exception& e) {
    std::printf("REPORT %s\n", e.what());
    return 2;
  }
  return 0;
}
