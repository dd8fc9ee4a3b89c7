#pragma once

#include <cuda_runtime_api.h>

#include "common/launch_status.h"
#include "nms_params.h"

namespace fastmask {

// 64-bit words per box in the overlap mask.
int64_t nms_mask_words(int64_t num_boxes);

// `mask`: B * N * nms_mask_words(N) uint64 of scratch; `removed`: B * nms_mask_words(N) uint64.
// Launches on `stream`, returns the launch status.
LaunchStatus multi_image_nms_cuda(const NmsParams& params, void* mask, void* removed, cudaStream_t stream);

// Host side (nms_cuda_ops.cpp): scratch from the caching allocator, the launches on the current
// stream, and their checks.
void multi_image_nms_cuda_run(const NmsParams& params);

}  // namespace fastmask
