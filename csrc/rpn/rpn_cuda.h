#pragma once

#include <cuda_runtime_api.h>

#include "common/launch_status.h"
#include "rpn_params.h"

namespace fastmask {

// Each launches one kernel on `stream` and returns its launch status.
LaunchStatus grid_anchors_cuda(const AnchorParams& p, cudaStream_t stream);
LaunchStatus decode_boxes_cuda(const BoxCodingParams& p, cudaStream_t stream);
LaunchStatus encode_boxes_cuda(const BoxCodingParams& p, cudaStream_t stream);
LaunchStatus propose_cuda(const ProposalParams& p, cudaStream_t stream);

}  // namespace fastmask
