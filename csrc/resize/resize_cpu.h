#pragma once

#include <cstdint>

#include "resize_params.h"

namespace fastmask {

// All jobs in one parallel loop over their output rows.
void resize_bilinear_cpu(const ResizeParams* jobs, int64_t count);

}  // namespace fastmask
