// Plain descriptions of the RPN ops (anchors, box coding, proposal selection),
// shared by the bindings, the CPU kernels and the CUDA launchers (no ATen here).
#pragma once

#include <cstdint>

#include "common/scalar_kind.h"

namespace fastmask {

// FPN has five levels; a few more are allowed, the binding rejects beyond this.
constexpr int kMaxRpnLevels = 16;

// One feature level's anchor grid: anchor (y, x, a) = shift(y, x) + cell[a].
struct AnchorGrid {
  int64_t height = 0, width = 0;        // feature map size
  int64_t stride_h = 0, stride_w = 0;   // padded image size // feature size
  int64_t cells = 0;                    // A: anchors per location
  const void* cell_anchors = nullptr;   // [A, 4] in the params' dtype, contiguous
};

struct AnchorParams {
  int64_t num_images = 0;
  int num_levels = 0;
  AnchorGrid levels[kMaxRpnLevels];
  int64_t level_start[kMaxRpnLevels + 1] = {};  // first anchor of each level; [num_levels] = total
  ScalarKind dtype = ScalarKind::kFloat32;
  void* anchors = nullptr;  // out: [num_images, total, 4]
};

// decode: out[n, 4c + j] from codes[n, 4c + j] and boxes[n]; encode: out[n] from
// (reference = codes, proposals = boxes). All contiguous, one dtype.
struct BoxCodingParams {
  int64_t num_boxes = 0;
  int64_t classes = 1;             // decode: 4-vectors of codes per box
  const void* codes = nullptr;
  const void* boxes = nullptr;
  double weights[4] = {1, 1, 1, 1};
  double clip = 0;                 // decode: upper bound of dw, dh
  ScalarKind dtype = ScalarKind::kFloat32;
  void* out = nullptr;
  void* transcendental = nullptr;  // [size, 2] exp (decode) / log (encode) scratch: see rpn::Pass
};

// The candidates of proposal generation: the per-level top-k anchors of each
// image, decoded, clipped and tested; NMS runs on them afterwards.
struct ProposalParams {
  int64_t num_images = 0;
  int num_levels = 0;
  AnchorGrid levels[kMaxRpnLevels];
  const void* deltas[kMaxRpnLevels] = {};        // level's [B, 4A, H, W] in dtype, any strides
  int64_t delta_strides[kMaxRpnLevels][4] = {};  // elements
  int64_t level_start[kMaxRpnLevels + 1] = {};   // first candidate of each level; [num_levels] = K
  const int64_t* topk_index = nullptr;  // [B, K] index of each candidate in its level: (y * W + x) * A + a
  const void* scores = nullptr;         // [B, K] sigmoid(objectness), dtype
  const int64_t* image_sizes = nullptr; // [B, 2] (height, width) before padding
  double weights[4] = {1, 1, 1, 1};
  double clip = 0;
  double min_size = 0;
  double score_thresh = 0;
  ScalarKind dtype = ScalarKind::kFloat32;
  void* boxes = nullptr;  // out: [B, K, 4]
  bool* valid = nullptr;  // out: [B, K] big enough and scored >= score_thresh
  void* transcendental = nullptr;  // [B * K, 2] exp scratch: see rpn::Pass
};

}  // namespace fastmask
