#pragma once

#include "nms_params.h"

namespace fastmask {

void multi_image_nms_cpu(const NmsParams& params);

}  // namespace fastmask
