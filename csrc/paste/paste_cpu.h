#pragma once

#include "paste_params.h"

namespace fastmask {

void paste_masks_cpu(const PasteParams& params);

}  // namespace fastmask
