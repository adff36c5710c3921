// The emulated cuTensorMapEncodeTiled: it checks every requirement that CUDA 13.0's cuda.h documents
// for tiled maps (the doc comment of cuTensorMapEncodeTiled) and keeps its own fields in the map's
// 128 opaque bytes, which the TMA handler (ptx.cpp) reads back.
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
};

bool decode_tensor_map(const void* map, TensorMapFields* out, std::string* why);
// The reason the last encode on this thread failed ("" after a success).
const std::string& last_tensor_map_error();

}  // namespace ak_emu
