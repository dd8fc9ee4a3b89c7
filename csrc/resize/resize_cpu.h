#pragma once

#include <cstdint>

#include "common/linear_interp.h"
#include "resize_params.h"

namespace fastmask {

// How PyTorch's two CPU bilinear kernels round (resize/torch_rounding.h).
struct TorchBilinearRounding {
  BilinearRounding separable, four_tap;
};

// All jobs in one parallel loop over their output rows, rounded as PyTorch rounds here.
void resize_bilinear_cpu(const ResizeParams* jobs, int64_t count);
// ... or as `rounding` says.
void resize_bilinear_cpu(const ResizeParams* jobs, int64_t count, const TorchBilinearRounding& rounding);

}  // namespace fastmask
