// Unit probes of the executor's handlers for the PTX that bmm_wgmma_v2.cu adds: stmatrix, named
// barriers, setmaxnreg, TMA stores with bulk groups, wgmma m64n256k16 and wgmma groups chained in
// flight. Each runs on known inputs through the kernels' own wrappers (hopper_tma.cuh,
// wgmma_128x256.cuh) and prints what each lane / byte ended up holding, or the executor's report;
// tests/test_emulator_ptx.py compares that with tables computed from the PTX ISA / CuTe layouts.
// Compiled for the CPU executor only, never by nvcc.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "probe_output.h"

#include "wgmma_128x256.cuh"  // wgmma m64n256k16, wgmma_wait, pack2 (and hopper_tma.cuh)

namespace probe {

using namespace accelkernels;
using namespace accelkernels::hopper;
using namespace accelkernels::tile_128x256;

// Lane l's register j holds elements (row l/4, columns 2(l%4), +1) of matrix j, whose value is
// 64 j + 8 row + col; lane l gives the address of row l%8 of matrix l/8.
__global__ void stmatrix_probe(uint16_t* out) {
  __shared__ __align__(16) uint16_t tile[4][8][8];
  const int l = threadIdx.x;
  uint32_t r[4];
  for (int j = 0; j < 4; ++j) {
    const uint32_t lo = 64 * j + 8 * (l / 4) + 2 * (l % 4);
    r[j] = lo | ((lo + 1) << 16);
  }
  stmatrix_x4(smem_addr(&tile[l >> 3][l & 7][0]), r[0], r[1], r[2], r[3]);
  __syncthreads();
  for (int i = l; i < 256; i += 32) out[i] = (&tile[0][0][0])[i];
}

// Warps 0-1 and warps 2-3 each synchronise on their own named barrier: warp 0 (or 2) writes a tile by
// stmatrix, warp 1 (or 3) reads it by ldmatrix after the barrier. mode 1: warp 1 skips the barrier
// (a race); mode 2: the two halves of barrier 1 disagree on the count.
__global__ void bar_sync_probe(uint32_t* out, int mode) {
  __shared__ __align__(16) uint16_t tile[2][4][8][8];
  const int warp = threadIdx.x / 32, l = threadIdx.x % 32, pair = warp / 2;
  if (warp % 2 == 0) {
    uint32_t r[4];
    for (int j = 0; j < 4; ++j) r[j] = (1000u * pair + 10u * j + l) | (1u << 16);
    stmatrix_x4(smem_addr(&tile[pair][l >> 3][l & 7][0]), r[0], r[1], r[2], r[3]);
    named_barrier_sync(1 + pair, mode == 2 && pair == 0 ? 96 : 64);
  } else {
    if (!(mode == 1 && pair == 0)) named_barrier_sync(1 + pair, 64);
    unsigned v[4];
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
                 : "r"(smem_addr(&tile[pair][l >> 3][l & 7][0])));
    for (int j = 0; j < 4; ++j) out[pair * 128 + l * 4 + j] = v[j];
  }
}

// 384 threads: warpgroup 0 gives registers back (.dec to 40), warpgroups 1 and 2 ask for `inc` each.
// At launch every thread has 168 (65536 / 384 in steps of 8): 40 + 2 x 232 adds up, 240 does not.
// inc 1: warpgroup 0 ".dec" to 176, above its 168; inc 2: an .inc to 236, not a multiple of 8.
__global__ void setmaxnreg_probe(uint32_t* out, int inc) {
  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    if (inc == 1) setmaxnreg_dec<176>();
    else setmaxnreg_dec<40>();
  } else if (inc == 2) {
    setmaxnreg_inc<236>();
  } else if (inc == 232) {
    setmaxnreg_inc<232>();
  } else if (inc == 240) {
    setmaxnreg_inc<240>();
  } else {
    setmaxnreg_inc<160>();  // below the 168 it has: a misuse
  }
  out[threadIdx.x] = 1;
}

// A 64 x 64 bf16 tile, element (r, c) = (7r + 3c) % 61 - 30, packed by stmatrix into the 128B-swizzled
// image (as the v2 epilogue does) and stored by TMA at (col0, row0) of a 40 x 104 matrix. mode 1: no
// fence.proxy.async; mode 2: no barrier between the writes and the store; mode 3: the tile rewritten
// before cp.async.bulk.wait_group.read.
__global__ void tma_store_probe(const __grid_constant__ CUtensorMap map, int col0, int row0, int mode) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* buf = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto value = [](int r, int c) { return static_cast<float>((7 * r + 3 * c) % 61 - 30); };
  auto write_tile = [&](float offset) {
    for (int jj = 0; jj < 8; jj += 2) {
      uint32_t r[4];
      for (int q = 0; q < 4; ++q) {
        const int row = warp * 16 + (q & 1) * 8 + lane / 4, col = 8 * (jj + (q >> 1)) + 2 * (lane % 4);
        r[q] = pack2<__nv_bfloat16>(value(row, col) + offset, value(row, col + 1) + offset);
      }
      const int mi = lane / 8, row = warp * 16 + (mi & 1) * 8 + lane % 8, cb = jj + (mi >> 1);
      stmatrix_x4(smem_addr(buf + row * 128 + ((cb ^ (row % 8)) * 16)), r[0], r[1], r[2], r[3]);
    }
  };
  write_tile(0.0f);
  if (mode != 1) fence_proxy_async();
  if (mode != 2) named_barrier_sync(1, 128);
  if (threadIdx.x == 0) {
    tma_store(&map, buf, col0, row0, 0);
    bulk_commit();
    if (mode != 3) bulk_wait_read<0>();
  }
  named_barrier_sync(1, 128);
  write_tile(100.0f);  // the buffer reused (after the wait: allowed)
  if (threadIdx.x == 0) bulk_wait<0>();
}

// One wgmma m64n256k16 on A (64 x 16) and B (256 x 16) loaded by TMA; with `chained`, a second group
// on the same accumulators is issued while the first is in flight (wait_group 1 between reads).
__global__ void wgmma256_probe(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                               float* out, float* mid, int chained) {
  extern __shared__ __align__(1024) unsigned char smem[];
  unsigned char* a_tile = smem;              // 64 rows x 128 B
  unsigned char* b_tile = smem + 64 * 128;   // 256 rows x 128 B (1024-aligned)
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 320 * 128);
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    fence_barrier_init();
    mbar_expect_tx(bar, 320 * 128);
    tma_load(a_tile, &map_a, 0, 0, 0, bar);
    tma_load(b_tile, &map_b, 0, 0, 0, bar);
  }
  __syncthreads();
  mbar_wait(bar, 0);
  float d[128];
  for (int i = 0; i < 128; ++i) d[i] = 1.0f;  // accumulate onto ones (scale-d = 1)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
  wgmma_m64n256k16<__nv_bfloat16>(d, matrix_descriptor(a_tile), matrix_descriptor(b_tile));
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  if (chained) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
    wgmma_m64n256k16<__nv_bfloat16>(d, matrix_descriptor(a_tile), matrix_descriptor(b_tile));
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    wgmma_wait<1>();  // the first group retired, the second in flight: the registers are still undefined
    for (int i = 0; i < 128; ++i) mid[threadIdx.x * 128 + i] = d[i];
  }
  wgmma_wait<0>();
  for (int i = 0; i < 128; ++i) out[threadIdx.x * 128 + i] = d[i];
}

// The same product from MN-major operands (imm-trans 1): A stored as 16 k-rows of 64 m (one 16 x 64 box,
// 2 KB), B as 16 k-rows of 256 n in four 16 x 64 boxes (2 KB apart: the descriptor's leading byte offset);
// the second k16 of a K step would start 16 rows on. mode 1: B's leading byte offset one box short
// (1 KB), so columns 64-255 read the wrong rows — the test sees the layout's LBO matter.
__global__ void wgmma256_mn_probe(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                                  float* out, int mode) {
  extern __shared__ __align__(1024) unsigned char smem[];
  unsigned char* a_tile = smem;                // 16 rows x 128 B
  unsigned char* b_tile = smem + 2048;         // 4 boxes of 16 rows x 128 B
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 5 * 2048);
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    fence_barrier_init();
    mbar_expect_tx(bar, 5 * 2048);
    tma_load(a_tile, &map_a, 0, 0, 0, bar);
    for (int j = 0; j < 4; ++j) tma_load(b_tile + j * 2048, &map_b, 64 * j, 0, 0, bar);
  }
  __syncthreads();
  mbar_wait(bar, 0);
  float d[128];
  for (int i = 0; i < 128; ++i) d[i] = 1.0f;
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
  wgmma_m64n256k16<__nv_bfloat16, true>(d, matrix_descriptor_mn(a_tile, 2048),
                                        matrix_descriptor_mn(b_tile, mode == 1 ? 1024 : 2048));
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  wgmma_wait<0>();
  for (int i = 0; i < 128; ++i) out[threadIdx.x * 128 + i] = d[i];
}

// A cluster of two 32-thread blocks. Each block's thread 0 initialises `bar` (count 2: one arrive from
// each block) and expects a 16 x 64 bf16 box; block 0 multicasts the box to both blocks (ctaMask 0b11);
// each thread 0 arrives on both blocks' barriers through mapa; each block waits for its barrier and
// copies its shared image out. mode 1: ctaMask names a block outside the cluster; mode 2: mapa of rank
// 2; mode 3: no barrier.cluster between the inits and the remote arrives; mode 4: block 0 leaves at once,
// with no barrier.cluster ordering the peer's arrive on its barrier before its exit.
__global__ void cluster_probe(const __grid_constant__ CUtensorMap map, uint8_t* out, int mode) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* box = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint64_t* bar = reinterpret_cast<uint64_t*>(box + 16 * 128);
  const unsigned rank = blockIdx.x % 2;
  if (threadIdx.x == 0) {
    mbar_init(bar, 2);
    fence_barrier_init();
  }
  if (mode != 3) cluster_sync();
  if (threadIdx.x == 0) {
    mbar_expect_tx(bar, 16 * 128);  // this block's arrive, with the bytes the multicast brings
    if (rank == 0) tma_load_multicast(box, &map, 0, 0, 0, bar, static_cast<uint16_t>(mode == 1 ? 0b101 : 0b11));
    mbar_arrive_cluster(mapa(bar, (rank + 1) % 2));  // the peer's barrier
  }
  if (mode == 2 && threadIdx.x == 0) mapa(bar, 2);
  if (mode == 4 && rank == 0) return;  // never observes the peer's arrive, and leaves without barrier.cluster
  mbar_wait(bar, 0);
  for (int i = threadIdx.x; i < 16 * 128; i += 32) out[rank * 16 * 128 + i] = box[i];
  if (mode != 4) cluster_sync();
}

// One im2col TMA copy: 32 pixels x 64 channels from the first output pixel (n0, p0, q0) of a
// convolution, for filter tap (r, s); the raw 128B-swizzled shared image out.
__global__ void im2col_probe(const __grid_constant__ CUtensorMap map, int n0, int h0, int w0, int off_h, int off_w,
                             uint8_t* out) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* box = aligned_1024(smem_raw);
  uint64_t* bar = reinterpret_cast<uint64_t*>(box + 32 * 128);
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    fence_barrier_init();
    mbar_expect_tx(bar, 32 * 128);
    tma_load_im2col(box, &map, 0, w0, h0, n0, static_cast<uint16_t>(off_w), static_cast<uint16_t>(off_h), bar);
  }
  __syncthreads();
  mbar_wait(bar, 0);
  for (int i = threadIdx.x; i < 32 * 128; i += 32) out[i] = box[i];
}

}  // namespace probe

using namespace probe;

CUtensorMap bf16_map(const __nv_bfloat16* base, uint64_t cols, uint64_t rows, uint32_t box_rows) {
  return hopper::tensor_map(base, static_cast<int64_t>(rows), static_cast<int64_t>(cols), 1,
                            static_cast<int64_t>(cols), static_cast<int64_t>(cols * rows), box_rows, 64, "probe");
}

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "";
  const int mode = argc > 2 ? std::atoi(argv[2]) : 0;
  try {
    if (what == "stmatrix") {
      std::vector<uint16_t> out(256);
      stmatrix_probe<<<1, 32>>>(out.data());
      print("tile", out);
    } else if (what == "bar_sync") {
      std::vector<uint32_t> out(256);
      bar_sync_probe<<<1, 128>>>(out.data(), mode);
      print("regs", out);
    } else if (what == "setmaxnreg") {
      std::vector<uint32_t> out(384);
      setmaxnreg_probe<<<1, 384>>>(out.data(), mode);
      print("flags", out);
    } else if (what == "tma_store") {  // a 40 x 104 bf16 matrix, poisoned
      alignas(16) static __nv_bfloat16 c[40 * 104];
      std::memset(c, 0xFF, sizeof(c));
      ak_emu::register_global(c, sizeof(c), true, "c");
      const CUtensorMap map = bf16_map(c, 104, 40, 64);
      const int smem = 64 * 128 + 1024;
      if (mode == 4) tma_store_probe<<<1, 128, smem>>>(map, -8, -60, 0);  // above and left of the matrix
      else tma_store_probe<<<1, 128, smem>>>(map, 72, 8, mode);
      std::vector<float> out(40 * 104);
      for (int i = 0; i < 40 * 104; ++i) out[i] = __bfloat162float(c[i]);
      print("c", out);
    } else if (what == "cluster") {  // a 20 x 40 bf16 matrix, element (row, k) = row * 100 + k
      alignas(16) static __nv_bfloat16 m[20 * 40];
      for (int r = 0; r < 20; ++r)
        for (int k = 0; k < 40; ++k) m[r * 40 + k] = __float2bfloat16_rn(static_cast<float>(r * 100 + k));
      ak_emu::register_global(m, sizeof(m), false, "m");
      const CUtensorMap map = hopper::tensor_map(m, 20, 40, 1, 40, 800, 16, 64, "probe");
      std::vector<uint8_t> out(2 * 16 * 128);
      cudaLaunchAttribute attribute[1];
      attribute[0].id = cudaLaunchAttributeClusterDimension;
      attribute[0].val.clusterDim.x = 2;
      attribute[0].val.clusterDim.y = 1;
      attribute[0].val.clusterDim.z = 1;
      cudaFuncSetAttribute(cluster_probe, cudaFuncAttributeMaxDynamicSharedMemorySize, 16 * 128 + 2048);
      const unsigned grid = mode == 5 ? 3 : 2;  // mode 5: a grid the cluster does not divide
      cudaLaunchConfig_t config = {dim3(grid), dim3(32), 16 * 128 + 2048, nullptr, attribute, 1};
      const cudaError_t error = cudaLaunchKernelEx(&config, cluster_probe, map, out.data(), mode);
      if (error != cudaSuccess) std::printf("launch error\n");
      print("image", out);
    } else if (what == "im2col") {  // N H W C R S stride pad dilation r s m0; x[n][h][w][c] = (7n + 5h + 3w + c) % 97 - 48
      int a[12];
      for (int i = 0; i < 12; ++i) a[i] = std::atoi(argv[2 + i]);
      const int n = a[0], h = a[1], w = a[2], c = a[3], rr = a[4], ss = a[5], st = a[6], pad = a[7], dil = a[8];
      const int p = (h + 2 * pad - dil * (rr - 1) - 1) / st + 1, q = (w + 2 * pad - dil * (ss - 1) - 1) / st + 1;
      std::vector<__nv_bfloat16> x(static_cast<size_t>(n) * h * w * c);
      for (int in = 0; in < n; ++in)
        for (int ih = 0; ih < h; ++ih)
          for (int iw = 0; iw < w; ++iw)
            for (int ic = 0; ic < c; ++ic)
              x[((static_cast<size_t>(in) * h + ih) * w + iw) * c + ic] =
                  __float2bfloat16_rn(static_cast<float>((7 * in + 5 * ih + 3 * iw + ic) % 97 - 48));
      ak_emu::register_global(x.data(), x.size() * 2, false, "x");
      const CUtensorMap map = hopper::im2col_tensor_map(x.data(), n, h, w, c, c, p, q, st, st, pad, pad, 32, 64, "probe");
      const int m0 = a[11], n0 = m0 / (p * q), p0 = (m0 / q) % p, q0 = m0 % q;
      std::vector<uint8_t> out(32 * 128);
      cudaFuncSetAttribute(im2col_probe, cudaFuncAttributeMaxDynamicSharedMemorySize, 32 * 128 + 2048);
      im2col_probe<<<1, 32, 32 * 128 + 2048>>>(map, n0, p0 * st - pad, q0 * st - pad, a[9] * dil, a[10] * dil, out.data());
      print("image", out);
    } else if (what == "wgmma256") {
      alignas(16) static __nv_bfloat16 a[64 * 16], b[256 * 16];
      for (int m = 0; m < 64; ++m)
        for (int k = 0; k < 16; ++k) a[m * 16 + k] = __float2bfloat16_rn(a_value(m, k));
      for (int n = 0; n < 256; ++n)
        for (int k = 0; k < 16; ++k) b[n * 16 + k] = __float2bfloat16_rn(b_value(k, n));
      const CUtensorMap ma = bf16_map(a, 16, 64, 64), mb = bf16_map(b, 16, 256, 256);
      std::vector<float> out(128 * 128), mid(128 * 128);
      cudaFuncSetAttribute(wgmma256_probe, cudaFuncAttributeMaxDynamicSharedMemorySize, 320 * 128 + 1024);
      wgmma256_probe<<<1, 128, 320 * 128 + 1024>>>(ma, mb, out.data(), mid.data(), mode);
      print("d", out);
      print("mid", mid);
    } else if (what == "wgmma256_mn") {  // A as (k, m), B as (k, n): the MN-major images
      alignas(16) static __nv_bfloat16 a[16 * 64], b[16 * 256];
      for (int k = 0; k < 16; ++k) {
        for (int m = 0; m < 64; ++m) a[k * 64 + m] = __float2bfloat16_rn(a_value(m, k));
        for (int n = 0; n < 256; ++n) b[k * 256 + n] = __float2bfloat16_rn(b_value(k, n));
      }
      const CUtensorMap ma = bf16_map(a, 64, 16, 16), mb = bf16_map(b, 256, 16, 16);
      std::vector<float> out(128 * 128);
      cudaFuncSetAttribute(wgmma256_mn_probe, cudaFuncAttributeMaxDynamicSharedMemorySize, 5 * 2048 + 1024);
      wgmma256_mn_probe<<<1, 128, 5 * 2048 + 1024>>>(ma, mb, out.data(), mode);
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
