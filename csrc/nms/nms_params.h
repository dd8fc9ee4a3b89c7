// Plain description of one multi-image NMS call, shared by the binding, the
// CPU kernel and the CUDA launchers (no ATen here).
#pragma once

#include <cstdint>

#include "common/scalar_kind.h"

namespace fastmask {

struct NmsParams {
  int64_t num_images = 0;  // B
  int64_t num_boxes = 0;   // N per image (padded; see `valid`)
  // Inputs already in descending score order per image (the binding sorts):
  const void* boxes = nullptr;         // [B, N, 4] (x1, y1, x2, y2), contiguous, in `dtype`
  const int64_t* order = nullptr;      // [B, N] original index of each sorted box
  const int64_t* classes = nullptr;    // [B, N] class / level id, or nullptr: one class
  const bool* valid = nullptr;         // [B, N], or nullptr: every box is valid
  double iou_threshold = 0.5;          // suppress when IoU > iou_threshold (as a double; see nms_threshold.h)
  int64_t max_output = 0;              // M: keep at most this many per image
  ScalarKind dtype = ScalarKind::kFloat32;
  // Outputs:
  int64_t* keep = nullptr;    // [B, M] original indices, by decreasing score; -1 after the last
  int64_t* counts = nullptr;  // [B] boxes kept per image
};

}  // namespace fastmask
