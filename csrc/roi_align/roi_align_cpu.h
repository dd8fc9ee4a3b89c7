#pragma once

#include "roi_align_params.h"

namespace fastmask {

void roi_align_forward_cpu(const RoIAlignParams& params);
void roi_align_backward_cpu(const RoIAlignParams& params);

}  // namespace fastmask
