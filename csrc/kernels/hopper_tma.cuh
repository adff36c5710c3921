// What the Hopper (sm_90a) GEMM kernels share: the PTX wrappers for mbarriers, TMA loads and stores,
// bulk-async groups, stmatrix, named barriers, register reconfiguration and wgmma matrix descriptors;
// the persistent tile walk; and, on the host, the tensor-map encoder. One job: talking to Hopper's
// asynchronous machinery. The kernels (bmm_wgmma.cu, bmm_wgmma_v2.cu) own their pipelines.
//
// Semantics and sources of every instruction: ../shared/EMULATION.md §1 and the PTX ISA; the CPU
// executor (csrc/emulator/ptx.cpp) interprets these very templates.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "wgmma_gate.cuh"

namespace accelkernels {
namespace hopper {

#ifdef AK_WGMMA_ENABLED
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ---- mbarriers (PTX 9.7.13.15) ------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes));
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)));
}
// Returns once the phase of parity `parity` has completed (parity 1 before any phase: at once).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  unsigned done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  }
}
// After the inits: make them visible to the other threads and to the async proxy (TMA) before use.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// One thread: the ring's "full" barriers (`full_count` arrivals: the producer's, with the bytes) and
// "empty" barriers (`empty_count` arrivals: one per consumer warpgroup that reads the stage), fenced.
// The caller then synchronises the threads (and the cluster) that use them.
__device__ __forceinline__ void init_ring(uint64_t* full, uint64_t* empty, int stages, unsigned full_count,
                                          unsigned empty_count) {
  for (int s = 0; s < stages; ++s) {
    mbar_init(&full[s], full_count);
    mbar_init(&empty[s], empty_count);
  }
  fence_barrier_init();
}
// The block's dynamic shared memory from its first 1024-byte boundary (128B-swizzled TMA boxes and the
// swizzle pattern of the wgmma descriptors need it; the kernels reserve the 1024 bytes).
__device__ __forceinline__ unsigned char* aligned_1024(unsigned char* raw) {
  return reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t{1023});
}

// ---- TMA (cp.async.bulk.tensor, PTX 9.7.9.25) ---------------------------------------------------
// Load box (k, row, batch) of `map` into `dst`, completing `bar`'s transaction.
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, int k, int row, int batch, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], "
      "[%2];\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(k), "r"(row), "r"(batch)
      : "memory");
}
// im2col mode (PTX "tensor im2col mode"; map from cuTensorMapEncodeIm2col, NHWC): a column of
// pixelsPerColumn pixels, channels [c, c + channelsPerPixel) each, the first at base position (w, h) of
// image n, the next ones stepping through the map's bounding box by its element strides (W fastest, then
// H, then the next image), each loaded at base + (off_w, off_h): for a convolution, the output pixels'
// top-left input positions and the filter tap's offset. Outside the tensor: zeros.
__device__ __forceinline__ void tma_load_im2col(void* dst, const CUtensorMap* map, int c, int w, int h, int n,
                                                uint16_t off_w, uint16_t off_h, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2], {%7, %8};\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c), "r"(w), "r"(h), "r"(n), "h"(off_w), "h"(off_h)
      : "memory");
}
// The same box into the same shared offset of every block of the cluster in `cta_mask`, each copy
// completing the mbarrier at `bar`'s offset in its own block.
__device__ __forceinline__ void tma_load_multicast(void* dst, const CUtensorMap* map, int k, int row, int batch,
                                                   uint64_t* bar, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], "
      "[%1, {%3, %4, %5}], [%2], %6;\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(k), "r"(row), "r"(batch), "h"(cta_mask)
      : "memory");
}
// Store `src` as box (col, row, batch) of `map`; elements outside the tensor are not written (the
// copy engine clips ragged edges). The store joins this thread's current bulk-async group.
__device__ __forceinline__ void tma_store(const CUtensorMap* map, const void* src, int col, int row, int batch) {
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(smem_addr(src)), "r"(col), "r"(row), "r"(batch)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Until at most N of this thread's bulk groups still read their shared source (then it may be rewritten).
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
// Until at most N of this thread's bulk groups are incomplete (their global writes done).
template <int N>
__device__ __forceinline__ void bulk_wait() {
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}
// Orders this thread's generic-proxy shared writes (stmatrix, st.shared) before later async-proxy
// reads of them (a TMA store): each writer fences, then a barrier, then one thread issues the store.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// ---- clusters (PTX 9.7.13.2, 9.7.9.22; distributed shared memory) -------------------------------------
// The shared::cluster address of `p`'s counterpart in the block of cluster rank `rank`.
__device__ __forceinline__ unsigned mapa(const void* p, unsigned rank) {
  unsigned out;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(out) : "r"(smem_addr(p)), "r"(rank));
  return out;
}
// Arrive on an mbarrier of any block of the cluster (its shared::cluster address), releasing at cluster scope.
__device__ __forceinline__ void mbar_arrive_cluster(unsigned cluster_addr) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(cluster_addr) : "memory");
}
// Every thread of every block of the cluster: the blocks' earlier accesses are visible to all after it.
// Without .aligned: the kernels call it after warp-divergent code (one elected thread per warpgroup).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\n" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory");
}

// ---- warp and warpgroup helpers -----------------------------------------------------------------
// stmatrix x4 (PTX 9.7.16.5.16; the inverse of ldmatrix): lane l gives the address of row l%8 of
// matrix l/8; register j of lane l holds row l/4, columns 2(l%4) and +1 of matrix j (low half first).
__device__ __forceinline__ void stmatrix_x4(unsigned addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r0), "r"(r1),
               "r"(r2), "r"(r3)
               : "memory");
}
// Named barrier `id` (1..15; 0 is __syncthreads) among `count` threads, whole warps.
__device__ __forceinline__ void named_barrier_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
// Register reconfiguration (PTX 9.7.19.5): the whole warpgroup asks for a new per-thread maximum;
// .dec returns registers to the block's pool, .inc waits until the pool holds what it asks for.
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

// ---- wgmma operands ------------------------------------------------------------------------------
// wgmma matrix descriptor of a K-major tile in the 128-byte swizzle layout TMA wrote: rows of 128 B,
// 8-row atoms 1024 B apart (the stride byte offset); the leading byte offset is unused for it.
__device__ __forceinline__ uint64_t matrix_descriptor(const void* tile) {
  const uint64_t addr = smem_addr(tile);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t{16 >> 4} << 16) | (uint64_t{1024 >> 4} << 32) | (1ull << 62);
}
// The same for an MN-major tile (wgmma's imm-trans = 1, f16/bf16 only): the reduction index runs down the
// 128-byte rows (8-row atoms 1024 B apart: the stride byte offset) and M or N along them, 64 elements per
// row; the next 64 of M or N start `next64_bytes` on (the leading byte offset). CuTe's canonical MN-major
// SW128 layout ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), T = 8 (include/cute/atom/mma_traits_sm90_gmma.hpp,
// make_gmma_desc<Major::MN>): exactly the image of boxes of (reduction rows x 64 elements) TMA writes.
__device__ __forceinline__ uint64_t matrix_descriptor_mn(const void* tile, uint32_t next64_bytes) {
  const uint64_t addr = smem_addr(tile);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t{(next64_bytes >> 4) & 0x3FFF} << 16) | (uint64_t{1024 >> 4} << 32) |
         (1ull << 62);
}

// Ties the accumulators to this point of the instruction stream: the compiler sees the wgmma results only
// as the asm's "+f" operands, so without this it may move register math on them (the epilogue) above a
// wgmma.wait_group, which has no register operands (CUTLASS: warpgroup_fence_operand).
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// ---- the persistent walk -------------------------------------------------------------------------
// tile -> (batch, tile row, tile column), `group_m` tile-rows at a time: consecutive tiles (the ones
// the SMs run at the same moment) share a few A panels and a few B panels, which then stay in L2,
// instead of one A panel against every B panel of the matrix (row-major order).
__device__ __forceinline__ void tile_coordinates(int64_t tile, int64_t tiles_m, int64_t tiles_n, int group_m,
                                                 int64_t& batch, int64_t& tm, int64_t& tn) {
  batch = tile / (tiles_m * tiles_n);
  const int64_t t = tile % (tiles_m * tiles_n);
  const int64_t per_group = group_m * tiles_n;
  const int64_t first_m = (t / per_group) * group_m;
  const int64_t rows = std::min<int64_t>(tiles_m - first_m, group_m);
  tm = first_m + (t % per_group) % rows;
  tn = (t % per_group) / rows;
}
#endif  // AK_WGMMA_ENABLED

// ---- host: tensor maps ---------------------------------------------------------------------------
inline PFN_cuTensorMapEncodeTiled_v12000 encode_function() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      ptr = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

// A 3-D (batch, rows, cols) map of a 16-bit matrix contiguous along cols, boxes of box_batch x box_rows
// x box_cols (box_cols * 2 = 128 bytes: one swizzle row), 128-byte swizzle. `who` names the kernel.
template <typename T>
CUtensorMap tensor_map(const T* base, int64_t rows, int64_t cols, int64_t batch, int64_t row_stride,
                       int64_t batch_stride, uint32_t box_rows, uint32_t box_cols, const char* who,
                       uint32_t box_batch = 1) {
  static_assert(sizeof(T) == 2, "16-bit elements");
  const auto encode = encode_function();
  if (encode == nullptr) throw std::runtime_error(std::string(who) + ": cuTensorMapEncodeTiled is unavailable");
  CUtensorMap map{};
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(batch)};
  // A single matrix has no batch stride of its own: any 16-byte multiple will do.
  const int64_t bstride = batch > 1 ? batch_stride : rows * row_stride;
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(row_stride * 2), static_cast<cuuint64_t>(bstride * 2)};
  const cuuint32_t box[3] = {box_cols, box_rows, box_batch};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const auto type = std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const CUresult result = encode(&map, type, 3, const_cast<T*>(base), dims, strides, box, element_strides,
                                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    throw std::runtime_error(std::string(who) + ": cuTensorMapEncodeTiled failed with CUresult " +
                             std::to_string(static_cast<int>(result)));
  }
  return map;
}

inline PFN_cuTensorMapEncodeIm2col_v12000 encode_im2col_function() {
  static PFN_cuTensorMapEncodeIm2col_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeIm2col", &ptr, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      ptr = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeIm2col_v12000>(ptr);
  }();
  return fn;
}

// An im2col map of an NHWC 16-bit tensor (c channels read of `pitch` per pixel, rows dense) for a
// convolution's implicit GEMM: boxes of `pixels` output pixels x `channels` input channels, 128-byte
// swizzle; channels past c are zero-filled, so a group's map reads no other group's. The bounding box of the base
// positions per image is [-pad, (P - 1) * stride + 1 - pad) along each spatial dimension, so its
// traversal by the stride visits exactly the P x Q output pixels (then the next image); the filter tap
// comes with each copy as its offset (r * dilation, s * dilation).
template <typename T>
CUtensorMap im2col_tensor_map(const T* base, int64_t n, int64_t h, int64_t w, int64_t c, int64_t pitch, int64_t p,
                              int64_t q, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              uint32_t pixels, uint32_t channels, const char* who) {
  static_assert(sizeof(T) == 2, "16-bit elements");
  const auto encode = encode_im2col_function();
  if (encode == nullptr) throw std::runtime_error(std::string(who) + ": cuTensorMapEncodeIm2col is unavailable");
  CUtensorMap map{};
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(c), static_cast<cuuint64_t>(w), static_cast<cuuint64_t>(h),
                              static_cast<cuuint64_t>(n)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(pitch * 2), static_cast<cuuint64_t>(w * pitch * 2),
                                 static_cast<cuuint64_t>(h * w * pitch * 2)};
  const int lower[2] = {static_cast<int>(-pad_w), static_cast<int>(-pad_h)};  // W first
  const int upper[2] = {static_cast<int>((q - 1) * stride_w + 1 - w - pad_w),
                        static_cast<int>((p - 1) * stride_h + 1 - h - pad_h)};
  const cuuint32_t element_strides[4] = {1, static_cast<cuuint32_t>(stride_w), static_cast<cuuint32_t>(stride_h), 1};
  const auto type = std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const CUresult result =
      encode(&map, type, 4, const_cast<T*>(base), dims, strides, lower, upper, channels, pixels, element_strides,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    throw std::runtime_error(std::string(who) + ": cuTensorMapEncodeIm2col failed with CUresult " +
                             std::to_string(static_cast<int>(result)));
  }
  return map;
}

// The persistent grid: one block per SM, never more blocks than tiles.
inline unsigned persistent_blocks(int64_t tiles) {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(tiles, sms)));
}

}  // namespace hopper
}  // namespace accelkernels
