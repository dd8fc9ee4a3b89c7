// Plain description of one bilinear resize call, shared by the binding, the
// CPU kernel and the CUDA launcher (no ATen here). The same kernel serves
// resize_bilinear (a batch of same-size images) and the fused preprocessing
// (one image at a time, normalised on the fly, written into a padded batch).
#pragma once

#include <cstdint>

#include "common/scalar_kind.h"

namespace fastmask {

constexpr int kMaxNormalisedChannels = 16;

struct ResizeParams {
  // Source: `batch` images of `channels` planes; element strides (n, c, y, x),
  // so NCHW, channels_last and HWC views need no copy.
  const void* src = nullptr;
  bool src_uint8 = false;  // else `dtype`
  int64_t batch = 0, channels = 0, in_height = 0, in_width = 0;
  int64_t src_stride[4] = {0, 0, 0, 0};

  // The bilinear map (see common/linear_interp.h): output size and scale
  // factors (<= 0: none, the step is in / out).
  int64_t out_height = 0, out_width = 0;
  double scale_factor_h = 0, scale_factor_w = 0;

  // Optional normalisation of every source value before it is interpolated
  // (torchvision normalises, then resizes): floating sources (v - mean[c]) / std[c]
  // with mean and std in `dtype`; uint8 sources (v / 255 - mean[c]) / std[c] in float32
  // (torchvision's input is `image.float() / 255`). Held by value: no device copy.
  bool normalise = false;
  double mean[kMaxNormalisedChannels] = {};
  double std[kMaxNormalisedChannels] = {};

  // Destination, element strides (n, c, y, x). The canvas may exceed the output
  // size: its other rows and columns are written with zeros (batch padding).
  void* dst = nullptr;
  bool dst_uint8 = false;  // uint8: rounded to nearest, clamped to [0, 255]
  int64_t dst_stride[4] = {0, 0, 0, 0};
  int64_t canvas_height = 0, canvas_width = 0;

  // The floating type of the source, or of the destination of a uint8 source.
  ScalarKind dtype = ScalarKind::kFloat32;

  // Which of PyTorch's CPU kernels computes this resize (common/linear_interp.h): the binding
  // decides as upsample_bilinear2d would, the CPU kernel follows (and rounds as that kernel).
  bool torch_four_tap = false;   // its channels-last kernel, else its separable one
};

}  // namespace fastmask
