#pragma once

#include <cuda_runtime_api.h>

#include "common/launch_status.h"
#include "paste_params.h"

namespace fastmask {

// Launches on `stream`, returns the launch status.
LaunchStatus paste_masks_cuda(const PasteParams& params, cudaStream_t stream);

}  // namespace fastmask
