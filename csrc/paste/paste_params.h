// Plain description of one mask-pasting call, shared by the binding, the CPU
// kernel and the CUDA launcher (no ATen here).
#pragma once

#include <cstdint>

#include "common/scalar_kind.h"

namespace fastmask {

struct PasteParams {
  const void* masks = nullptr;  // [N, mask_height, mask_width], contiguous, in `dtype`
  int64_t num_masks = 0, mask_height = 0, mask_width = 0;
  int64_t padding = 1;            // zero border torchvision adds around each mask
  const int64_t* boxes = nullptr; // [N, 4] integer boxes (x0, y0, x1, y1), inclusive, already expanded
  int64_t height = 0, width = 0;  // image size
  ScalarKind dtype = ScalarKind::kFloat32;
  // Output [N, height, width]: the pasted masks in `dtype`, or with `binary`,
  // bool (value > threshold).
  void* out = nullptr;
  bool binary = false;
  double threshold = 0.5;
};

}  // namespace fastmask
