// The emulated cuTensorMapEncodeTiled and cuTensorMapEncodeIm2col: they check every requirement that
// CUDA 13.0's cuda.h documents for those maps (the doc comments of the two functions) and keep their own
// fields in the map's 128 opaque bytes, which the TMA handler (ptx.cpp) reads back.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <string>

namespace ak_emu {

struct TensorMapFields {
  int rank = 0, esize = 0;
  CUtensorMapDataType dtype{};
  const void* address = nullptr;
  uint64_t dims[5] = {}, strides[4] = {};  // strides in bytes of dims 1..rank-1
  uint32_t box[5] = {}, element_strides[5] = {};
  CUtensorMapInterleave interleave{};
  CUtensorMapSwizzle swizzle{};
  CUtensorMapFloatOOBfill oob_fill{};
  // im2col maps (rank 3..5: C, then W, H, D, then N): the bounding box of the pixels' base positions per
  // image is [lower[i], dims[i + 1] + upper[i]) along spatial dimension i (W first), traversed with
  // element_strides[i + 1]; each load fills pixels_per_column rows of channels_per_pixel elements.
  bool im2col = false;
  int lower[3] = {}, upper[3] = {};
  uint32_t channels_per_pixel = 0, pixels_per_column = 0;
};

bool decode_tensor_map(const void* map, TensorMapFields* out, std::string* why);
// The reason the last encode on this thread failed ("" after a success).
const std::string& last_tensor_map_error();

}  // namespace ak_emu
