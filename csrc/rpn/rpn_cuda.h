#pragma once

#include <cuda_runtime_api.h>

#include "rpn_params.h"

namespace fastmask {

// Each launches one kernel on `stream` and returns the launch error.
cudaError_t grid_anchors_cuda(const AnchorParams& p, cudaStream_t stream);
cudaError_t decode_boxes_cuda(const BoxCodingParams& p, cudaStream_t stream);
cudaError_t encode_boxes_cuda(const BoxCodingParams& p, cudaStream_t stream);
cudaError_t propose_cuda(const ProposalParams& p, cudaStream_t stream);

}  // namespace fastmask
