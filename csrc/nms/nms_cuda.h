#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/launch_status.h"
#include "nms_params.h"

namespace fastmask {

// Candidates per tile, and threads per block of the greedy kernel (one alive
// candidate per thread). The binding cuts every class group into tiles of at
// most this many candidates.
constexpr int kNmsTile = 256;

// The candidates of one call grouped on the device by the binding
// (nms_cuda_ops.cpp), and the kernels' scratch. No ATen here.
struct NmsCudaGroups {
  // [B, N] score ranks: per image, slots [0, num_valid[b]) hold the valid
  // candidates grouped by class (ascending), by score within a class. The
  // greedy kernel overwrites the first slots of each tile with the ranks it keeps.
  int32_t* ranks = nullptr;
  const int64_t* num_valid = nullptr;  // [B]
  // [B * N]: the tiles in (image, slot) order, 2 * (b * N + first slot),
  // plus 1 when the tile starts its group; entries past num_tiles are unused.
  const int64_t* tiles = nullptr;
  const int64_t* num_tiles = nullptr;  // [1]
  // [B * N]: for each tile, the first tile of its group (entries past num_tiles unused).
  const int64_t* first_tiles = nullptr;
  // [B * N] zeroed: 1 + the kept count of each settled tile (by ticket).
  int32_t* tile_status = nullptr;
  unsigned long long* kept = nullptr;  // [B, nms_kept_words(N)] zeroed: kept flags by score rank
  // Zeroed: hands out the tickets. 64-bit: a call may have 2^31 tiles or more, and every
  // block takes one ticket past the last tile.
  unsigned long long* next_ticket = nullptr;
  // Persistent blocks of the greedy kernel: the GPU's thread capacity in blocks. The kernel's
  // registers let fewer run at once (6 of 8 per SM on sm_90, 4 in double: nms_cuda.cu); the
  // others start as those exit, and find no ticket left.
  int num_blocks = 1;
};

// 64-bit words of kept flags per image.
int64_t nms_kept_words(int64_t num_boxes);

// Launches on `stream`, returns the launch status.
LaunchStatus multi_image_nms_cuda(const NmsParams& params, const NmsCudaGroups& groups, cudaStream_t stream);

// Host side (nms_cuda_ops.cpp): groups the candidates, scratch from the caching allocator, the
// launches on the current stream, and their checks.
struct SortedNmsInputs;
void multi_image_nms_cuda_run(const SortedNmsInputs& inputs);

}  // namespace fastmask
