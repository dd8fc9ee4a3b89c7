#pragma once

#include <cuda_runtime_api.h>

#include "common/launch_status.h"
#include "roi_align_params.h"

namespace fastmask {

// Launch on `stream`; return the launch status (the caller raises it).
LaunchStatus roi_align_forward_cuda(const RoIAlignParams& params, cudaStream_t stream);
LaunchStatus roi_align_backward_cuda(const RoIAlignParams& params, bool deterministic, cudaStream_t stream);

}  // namespace fastmask
