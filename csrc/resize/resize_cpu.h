#pragma once

#include "resize_params.h"

namespace fastmask {

void resize_bilinear_cpu(const ResizeParams& params);

}  // namespace fastmask
