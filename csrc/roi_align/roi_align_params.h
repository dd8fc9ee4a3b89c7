// Plain description of one RoIAlign call, shared by the binding (which fills
// it from tensors), the CPU kernels and the CUDA launchers. No ATen here, so
// the .cu files that include it compile without the heavy torch headers.
#pragma once

#include <cstdint>

#include "common/scalar_kind.h"

namespace fastmask {

// Most FPN levels one call can pool from (P2..P6 needs 5).
constexpr int kMaxLevels = 8;

struct RoIAlignLevel {
  const void* features = nullptr;  // forward: [N, C, H, W] in `dtype`
  void* grad_features = nullptr;   // backward: [N, C, H, W] in the accumulation type
  int64_t height = 0;
  int64_t width = 0;
  double spatial_scale = 1.0;
};

struct RoIAlignParams {
  RoIAlignLevel levels[kMaxLevels];
  int num_levels = 1;

  // [K, 5] (batch index, x1, y1, x2, y2), contiguous, in the accumulation type
  // (float64 for float64 features, float32 otherwise).
  const void* rois = nullptr;
  // [K] level of each RoI; nullptr means every RoI pools from level 0.
  const int64_t* roi_levels = nullptr;

  int64_t num_rois = 0;
  int64_t batch_size = 0;
  int64_t channels = 0;
  int64_t pooled_height = 1;
  int64_t pooled_width = 1;
  int64_t sampling_ratio = -1;  // <= 0: adaptive, ceil(roi size / pooled size)
  bool aligned = false;

  // Layout of the features (and of the forward output / backward gradient):
  // false = NCHW contiguous, true = NHWC (channels_last) contiguous.
  bool channels_last = false;

  ScalarKind dtype = ScalarKind::kFloat32;

  // Forward: output [K, C, PH, PW] in `dtype`, laid out like the features.
  void* output = nullptr;

  // Backward: gradient of the output in `dtype`, with arbitrary strides over
  // (K, C, PH, PW); gradients go to levels[l].grad_features.
  const void* grad_output = nullptr;
  int64_t grad_output_strides[4] = {0, 0, 0, 0};

  // Backward, for backends that ask for it (RoIAlignBackend::bucket_rois): the RoI indices
  // grouped by bucket b = level * batch_size + image, increasing within each bucket; bucket
  // b is roi_order[bucket_begin[b] .. bucket_begin[b + 1]). RoIs with a batch index or level
  // out of range come last, in no bucket. Device memory, like the rest.
  const int64_t* roi_order = nullptr;     // [K]
  const int64_t* bucket_begin = nullptr;  // [num_levels * batch_size + 1]
};

// The largest explicit sampling_ratio accepted. Larger values are rejected
// rather than running (sampling_ratio^2 samples per bin) for ever.
constexpr int64_t kMaxSamplingRatio = 128;

}  // namespace fastmask
