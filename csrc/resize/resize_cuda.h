#pragma once

#include <cuda_runtime_api.h>

#include "common/launch_status.h"
#include "resize_params.h"

namespace fastmask {

// Launches on `stream`, returns the launch status.
LaunchStatus resize_bilinear_cuda(const ResizeParams& params, cudaStream_t stream);

}  // namespace fastmask
