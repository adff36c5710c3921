// The CUDA runtime and driver calls the host launchers in csrc/kernels/ make, answered by the
// emulated device: a Hopper (compute capability settable, 9.0 by default) with a small SM count
// (Settings::sm_count, 2 by default, so persistent kernels walk several tiles) and 227 KB of shared
// memory per block; cudaFuncSetAttribute's opt-in is enforced at launch (runtime.cpp).
#include <cudaTypedefs.h>

#include <cstring>
#include <string>

#include "runtime_internal.h"
#include "tensor_map.h"

namespace ak_emu {
namespace {

constexpr uint64_t kMagic = 0x414b454d55544d41ull;  // "AKEMUTMA"

#pragma pack(push, 1)
struct Packed {
  uint64_t magic;
  uint64_t address;
  uint64_t dims[5];
  uint64_t strides[4];
  uint16_t box[5];
  uint8_t element_strides[5];
  uint8_t rank, esize, dtype, interleave, swizzle, oob;
  uint8_t im2col;
  int16_t lower[3], upper[3];
  uint16_t channels_per_pixel, pixels_per_column;
};
#pragma pack(pop)
static_assert(sizeof(Packed) <= sizeof(CUtensorMap), "fits the opaque bytes");

thread_local std::string g_last_error;

int element_size(CUtensorMapDataType t) {
  switch (t) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8: return 1;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: return 2;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32: return 4;
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT64:
    case CU_TENSOR_MAP_DATA_TYPE_INT64:
    case CU_TENSOR_MAP_DATA_TYPE_UINT64: return 8;
    default: return 0;
  }
}

thread_local const char* g_encoder = "cuTensorMapEncodeTiled";

CUresult refuse(const std::string& why) {
  g_last_error = std::string(g_encoder) + ": " + why;
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult encode_tiled(CUtensorMap* map, CUtensorMapDataType dtype, cuuint32_t rank, void* address, const cuuint64_t* dims,
                      const cuuint64_t* strides, const cuuint32_t* box, const cuuint32_t* element_strides,
                      CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle, CUtensorMapL2promotion,
                      CUtensorMapFloatOOBfill oob) {
  g_last_error.clear();
  g_encoder = "cuTensorMapEncodeTiled";
  if (reinterpret_cast<uintptr_t>(map) % 64) return refuse("tensorMap must be 64-byte aligned");
  const int esize = element_size(dtype);
  if (esize == 0) return refuse("tensorDataType " + std::to_string(dtype) + " is not emulated");
  if (rank < 1 || rank > 5) return refuse("tensorRank must be 1..5, got " + std::to_string(rank));
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE) return refuse("interleaved layouts are not emulated");
  if (reinterpret_cast<uintptr_t>(address) % 16) return refuse("globalAddress must be 16-byte aligned");
  for (cuuint32_t d = 0; d < rank; ++d) {
    if (dims[d] == 0 || dims[d] > (uint64_t{1} << 32))
      return refuse("globalDim[" + std::to_string(d) + "] must be 1..2^32, got " + std::to_string(dims[d]));
    if (box[d] == 0 || box[d] > 256)
      return refuse("boxDim[" + std::to_string(d) + "] must be 1..256, got " + std::to_string(box[d]));
    if (element_strides[d] == 0 || element_strides[d] > 8)
      return refuse("elementStrides[" + std::to_string(d) + "] must be 1..8, got " + std::to_string(element_strides[d]));
    if (d > 0 && element_strides[d] != 1) return refuse("element strides other than 1 are not emulated");
  }
  for (cuuint32_t d = 0; d + 1 < rank; ++d)
    if (strides[d] % 16 || strides[d] >= (uint64_t{1} << 40))
      return refuse("globalStrides[" + std::to_string(d) + "] must be a multiple of 16 below 2^40, got " +
                    std::to_string(strides[d]));
  if ((uint64_t{box[0]} * esize) % 16) return refuse("boxDim[0] * element size must be a multiple of 16 bytes");
  const int span = swizzle == CU_TENSOR_MAP_SWIZZLE_32B ? 32 : swizzle == CU_TENSOR_MAP_SWIZZLE_64B ? 64 : 128;
  if (swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && uint64_t{box[0]} * esize > static_cast<uint64_t>(span))
    return refuse("with swizzle the inner box dimension (" + std::to_string(box[0] * esize) + " bytes) must be <= " +
                  std::to_string(span));
  if (swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && swizzle != CU_TENSOR_MAP_SWIZZLE_128B)
    return refuse("only SWIZZLE_NONE and SWIZZLE_128B are emulated");
  if (oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) return refuse("only FLOAT_OOB_FILL_NONE (zeros) is emulated");
  Packed p{};
  p.magic = kMagic;
  p.address = reinterpret_cast<uintptr_t>(address);
  for (cuuint32_t d = 0; d < rank; ++d) {
    p.dims[d] = dims[d];
    p.box[d] = static_cast<uint16_t>(box[d]);
    p.element_strides[d] = static_cast<uint8_t>(element_strides[d]);
    if (d + 1 < rank) p.strides[d] = strides[d];
  }
  p.rank = static_cast<uint8_t>(rank);
  p.esize = static_cast<uint8_t>(esize);
  p.dtype = static_cast<uint8_t>(dtype);
  p.interleave = static_cast<uint8_t>(interleave);
  p.swizzle = static_cast<uint8_t>(swizzle);
  p.oob = static_cast<uint8_t>(oob);
  std::memset(map, 0, sizeof(CUtensorMap));
  std::memcpy(map, &p, sizeof(p));
  return CUDA_SUCCESS;
}

// cuTensorMapEncodeIm2col (cuda.h's doc comment): rank 3..5, spatial corner offsets in [-32768, 32767],
// [-128, 127] or [-16, 15] for rank 3, 4, 5, a bounding box of non-zero size, channelsPerPixel <= 256,
// pixelsPerColumn <= 1024, element strides 1..8 (that of C ignored); the rest as for tiled maps, with
// the box being pixelsPerColumn rows of channelsPerPixel elements.
CUresult encode_im2col(CUtensorMap* map, CUtensorMapDataType dtype, cuuint32_t rank, void* address, const cuuint64_t* dims,
                       const cuuint64_t* strides, const int* lower, const int* upper, cuuint32_t channels_per_pixel,
                       cuuint32_t pixels_per_column, const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                       CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  g_last_error.clear();
  g_encoder = "cuTensorMapEncodeIm2col";
  if (rank < 3 || rank > 5) return refuse("tensorRank must be 3, 4 or 5, got " + std::to_string(rank));
  const int spatial = static_cast<int>(rank) - 2;
  const int limit = rank == 3 ? 32768 : rank == 4 ? 128 : 16;
  for (int i = 0; i < spatial; ++i) {
    for (int v : {lower[i], upper[i]})
      if (v < -limit || v > limit - 1)
        return refuse("pixel box corner offset " + std::to_string(v) + " outside [" + std::to_string(-limit) + ", " +
                      std::to_string(limit - 1) + "] for rank " + std::to_string(rank));
    if (static_cast<int64_t>(dims[i + 1]) + upper[i] - lower[i] <= 0)
      return refuse("the bounding box has no area along spatial dimension " + std::to_string(i));
  }
  if (channels_per_pixel == 0 || channels_per_pixel > 256)
    return refuse("channelsPerPixel must be 1..256, got " + std::to_string(channels_per_pixel));
  if (pixels_per_column == 0 || pixels_per_column > 1024)
    return refuse("pixelsPerColumn must be 1..1024, got " + std::to_string(pixels_per_column));
  // The checks a tiled map makes, on a box of (channelsPerPixel, 1, ...): boxDim[0] is the inner row.
  cuuint32_t box[5] = {channels_per_pixel, 1, 1, 1, 1};
  cuuint32_t strides_for_tiled[5] = {1, 1, 1, 1, 1};
  for (cuuint32_t d = 0; d < rank; ++d) {
    if (element_strides[d] == 0 || element_strides[d] > 8)
      return refuse("elementStrides[" + std::to_string(d) + "] must be 1..8, got " + std::to_string(element_strides[d]));
  }
  const CUresult tiled = encode_tiled(map, dtype, rank, address, dims, strides, box, strides_for_tiled, interleave,
                                      swizzle, l2, oob);
  g_encoder = "cuTensorMapEncodeIm2col";
  if (tiled != CUDA_SUCCESS) {
    g_last_error = "cuTensorMapEncodeIm2col" + g_last_error.substr(g_last_error.find(':'));
    return tiled;
  }
  Packed p;
  std::memcpy(&p, map, sizeof(p));
  p.im2col = 1;
  for (int i = 0; i < spatial; ++i) {
    p.lower[i] = static_cast<int16_t>(lower[i]);
    p.upper[i] = static_cast<int16_t>(upper[i]);
  }
  for (cuuint32_t d = 0; d < rank; ++d) p.element_strides[d] = static_cast<uint8_t>(element_strides[d]);
  p.box[0] = static_cast<uint16_t>(channels_per_pixel);
  p.box[1] = static_cast<uint16_t>(pixels_per_column);
  for (cuuint32_t d = 2; d < rank; ++d) p.box[d] = 1;
  p.channels_per_pixel = static_cast<uint16_t>(channels_per_pixel);
  p.pixels_per_column = static_cast<uint16_t>(pixels_per_column);
  std::memcpy(map, &p, sizeof(p));
  return CUDA_SUCCESS;
}

}  // namespace

const std::string& last_tensor_map_error() { return g_last_error; }

bool decode_tensor_map(const void* map, TensorMapFields* out, std::string* why) {
  Packed p;
  std::memcpy(&p, map, sizeof(p));
  if (p.magic != kMagic) {
    *why = "the tensor map operand does not hold a map encoded by cuTensorMapEncodeTiled (or it was overwritten)";
    return false;
  }
  out->rank = p.rank;
  out->esize = p.esize;
  out->dtype = static_cast<CUtensorMapDataType>(p.dtype);
  out->address = reinterpret_cast<const void*>(p.address);
  for (int d = 0; d < 5; ++d) {
    out->dims[d] = p.dims[d];
    out->box[d] = p.box[d];
    out->element_strides[d] = p.element_strides[d];
    if (d < 4) out->strides[d] = p.strides[d];
  }
  out->interleave = static_cast<CUtensorMapInterleave>(p.interleave);
  out->swizzle = static_cast<CUtensorMapSwizzle>(p.swizzle);
  out->oob_fill = static_cast<CUtensorMapFloatOOBfill>(p.oob);
  out->im2col = p.im2col != 0;
  for (int i = 0; i < 3; ++i) {
    out->lower[i] = p.lower[i];
    out->upper[i] = p.upper[i];
  }
  out->channels_per_pixel = p.channels_per_pixel;
  out->pixels_per_column = p.pixels_per_column;
  return true;
}

}  // namespace ak_emu

// ---- the runtime API (declared extern "C" by cuda_runtime_api.h) --------------------------------------

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  const auto& s = ak_emu::settings();
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = s.sm_count; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = s.cc_major; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = s.cc_minor; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(s.smem_per_block_optin); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; return cudaSuccess;
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  if (value < 0 || static_cast<size_t>(value) > ak_emu::settings().smem_per_block_optin) return cudaErrorInvalidValue;
  ak_emu::set_function_smem_limit(func, static_cast<size_t>(value));
  return cudaSuccess;
}

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned int version, unsigned long long,
                                             cudaDriverEntryPointQueryResult* status) {
  if (std::strcmp(symbol, "cuTensorMapEncodeTiled") == 0 && version >= 12000) {
    *fn = reinterpret_cast<void*>(&ak_emu::encode_tiled);
    if (status) *status = cudaDriverEntryPointSuccess;
    return cudaSuccess;
  }
  if (std::strcmp(symbol, "cuTensorMapEncodeIm2col") == 0 && version >= 12000) {
    *fn = reinterpret_cast<void*>(&ak_emu::encode_im2col);
    if (status) *status = cudaDriverEntryPointSuccess;
    return cudaSuccess;
  }
  *fn = nullptr;
  if (status) *status = cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}
