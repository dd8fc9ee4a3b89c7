#pragma once

#include "nms.h"

namespace fastmask {

void multi_image_nms_cpu(const SortedNmsInputs& inputs);

}  // namespace fastmask
