#pragma once

#include "rpn_params.h"

namespace fastmask {

void grid_anchors_cpu(const AnchorParams& p);
void decode_boxes_cpu(const BoxCodingParams& p);
void encode_boxes_cpu(const BoxCodingParams& p);
void propose_cpu(const ProposalParams& p);

}  // namespace fastmask
