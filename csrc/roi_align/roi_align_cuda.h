#pragma once

#include <cuda_runtime_api.h>

#include "roi_align_params.h"

namespace fastmask {

// Launch on `stream`; return the launch's error (the caller raises it).
cudaError_t roi_align_forward_cuda(const RoIAlignParams& params, cudaStream_t stream);
cudaError_t roi_align_backward_cuda(const RoIAlignParams& params, bool deterministic, cudaStream_t stream);

}  // namespace fastmask
