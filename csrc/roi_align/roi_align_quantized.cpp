// RoIAlign of quantized features (QuantizedCPU), with torchvision's quantized semantics:
//  - per-tensor affine quint8 / qint8 / qint32 features and RoIs; one image per batch (the
//    batch column is ignored, as it need not be exact after quantization);
//  - the RoIs are dequantized to float32, the geometry is the float32 one of the float kernel;
//  - each bin sums weight * raw integer over its samples, then dequantizes once:
//    scale * (sum - zero_point * sum of weights), averages, and requantizes to the features'
//    scale and zero point (round to nearest even, clamped to the type's range).
#include <torch/headeronly/util/qint32.h>
#include <torch/headeronly/util/qint8.h>
#include <torch/headeronly/util/quint8.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "common/stable_aten.h"
#include "roi_align_params.h"
#include "roi_align_taps.h"

namespace fastmask {
namespace {

template <typename Q>
void roi_align_quantized_kernel(const Tensor& input, double q_scale, int64_t zero_point,
                                const std::vector<float>& boxes, float spatial_scale, int64_t pooled_height,
                                int64_t pooled_width, int64_t sampling_ratio, bool aligned, Tensor& output) {
  using raw_t = typename Q::underlying;
  const int64_t channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t num_rois = output.size(0);
  const raw_t* features = static_cast<const raw_t*>(input.const_data_ptr());
  raw_t* out = static_cast<raw_t*>(output.mutable_data_ptr());
  const float scale = static_cast<float>(q_scale);
  const float inv_scale = 1.0f / scale;
  constexpr int64_t qmin = std::numeric_limits<raw_t>::min();
  constexpr int64_t qmax = std::numeric_limits<raw_t>::max();
  if (height == 0 || width == 0) {  // nothing to sample: every bin is 0, i.e. the zero point
    std::fill(out, out + output.numel(), static_cast<raw_t>(zero_point));
    return;
  }

  parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<AxisTap<float>> y_taps, x_taps;
    std::vector<int32_t> y_begin, x_begin;
    for (int64_t k = begin; k < end; ++k) {
      const float* roi = boxes.data() + 5 * k;
      const RoIGeometry<float> g = roi_geometry<float>(roi, spatial_scale, pooled_height, pooled_width,
                                                       sampling_ratio, aligned, /*batch_size=*/1);
      axis_taps(g.start_h, g.bin_h, g.grid_h, pooled_height, height, y_taps, y_begin);
      axis_taps(g.start_w, g.bin_w, g.grid_w, pooled_width, width, x_taps, x_begin);
      for (int64_t c = 0; c < channels; ++c) {
        const raw_t* plane = features + c * height * width;
        raw_t* out_plane = out + (k * channels + c) * pooled_height * pooled_width;
        for (int64_t ph = 0; ph < pooled_height; ++ph) {
          for (int64_t pw = 0; pw < pooled_width; ++pw) {
            float sum = 0.f, sum_weights = 0.f;
            for (int64_t i = y_begin[ph]; i < y_begin[ph + 1]; ++i) {
              const AxisTap<float>& ty = y_taps[i];
              for (int64_t j = x_begin[pw]; j < x_begin[pw + 1]; ++j) {
                const AxisTap<float>& tx = x_taps[j];
                const BilinearWeights<float> w = bilinear_weights(ty, tx);
                sum += w.w1 * static_cast<float>(plane[ty.low * width + tx.low]) +
                       w.w2 * static_cast<float>(plane[ty.low * width + tx.high]) +
                       w.w3 * static_cast<float>(plane[ty.high * width + tx.low]) +
                       w.w4 * static_cast<float>(plane[ty.high * width + tx.high]);
                sum_weights += w.w1 + w.w2 + w.w3 + w.w4;
              }
            }
            float value = scale * (sum - static_cast<float>(zero_point) * sum_weights);
            value /= g.count;
            int64_t q = zero_point + static_cast<int64_t>(std::nearbyint(value * inv_scale));
            q = std::min(std::max(q, qmin), qmax);
            out_plane[ph * pooled_width + pw] = static_cast<raw_t>(q);
          }
        }
      }
    }
  });
}

// The RoIs dequantized to float32, batch index 0 (only one image is allowed).
std::vector<float> dequantized_rois(const Tensor& rois) {
  const Tensor raw = aten::contiguous(aten::to(aten::int_repr(rois), ScalarType::Long));
  const int64_t* q = static_cast<const int64_t*>(raw.const_data_ptr());
  const float scale = static_cast<float>(aten::q_scale(rois));
  const int64_t zero_point = aten::q_zero_point(rois);
  std::vector<float> boxes(raw.numel());
  for (int64_t i = 0; i < raw.numel(); ++i) {
    boxes[i] = i % 5 == 0 ? 0.f : scale * static_cast<float>(q[i] - zero_point);
  }
  return boxes;
}

// Per-tensor affine (the per-channel schemes are refused by q_scale, and by the Python wrapper).
Tensor roi_align_quantized(const Tensor& input, const Tensor& rois, double spatial_scale, int64_t pooled_height,
                           int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                           bool /*deterministic: no backward*/) {
  FASTMASK_CHECK_VALUE(input.dim() == 4, "fastmask.roi_align: input must be a 4-D [N, C, H, W] tensor, got shape ",
                       shape(input));
  const bool quint8 = has_dtype(input, ScalarType::QUInt8), qint8 = has_dtype(input, ScalarType::QInt8);
  FASTMASK_CHECK_TYPE(quint8 || qint8 || has_dtype(input, ScalarType::QInt32),
                      "fastmask.roi_align: quantized input must be quint8, qint8 or qint32, got ", dtype_name(input));
  FASTMASK_CHECK_TYPE(is_quantized(rois),
                      "fastmask.roi_align: if input is quantized, rois must also be quantized (per tensor)");
  FASTMASK_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5,
                       "fastmask.roi_align: rois must be a [K, 5] tensor (batch index, x1, y1, x2, y2), got shape ",
                       shape(rois));
  // As torchvision: quantized batch indices need not be exact, so the batch index is not used.
  FASTMASK_CHECK(input.size(0) == 1, "fastmask.roi_align: Only one image per batch is allowed with quantized input, got ",
                 input.size(0), " images");
  FASTMASK_CHECK_VALUE(pooled_height > 0 && pooled_width > 0, "fastmask.roi_align: output_size must be positive, got (",
                       pooled_height, ", ", pooled_width, ")");
  FASTMASK_CHECK_VALUE(sampling_ratio <= kMaxSamplingRatio, "fastmask.roi_align: sampling_ratio must be <= ",
                       kMaxSamplingRatio, " (or <= 0 for adaptive sampling), got ", sampling_ratio);
  FASTMASK_CHECK_VALUE(std::isfinite(spatial_scale) && spatial_scale > 0,
                       "fastmask.roi_align: spatial_scale must be finite and positive, got ", spatial_scale);

  const Tensor features = aten::contiguous(input);
  const double scale = aten::q_scale(input);
  const int64_t zero_point = aten::q_zero_point(input);
  // The raw integers first (the stable ABI names no quantized dtype), then the quantized tensor
  // of the input's type, scale and zero point around them.
  const ScalarType raw_type = quint8 ? ScalarType::Byte : qint8 ? ScalarType::Char : ScalarType::Int;
  Tensor raw = aten::empty({rois.size(0), input.size(1), pooled_height, pooled_width}, raw_type,
                           Device(DeviceType::CPU));
  if (raw.numel() > 0) {
    const std::vector<float> boxes = dequantized_rois(rois);
    const auto run = [&](auto q) {
      roi_align_quantized_kernel<decltype(q)>(features, scale, zero_point, boxes, static_cast<float>(spatial_scale),
                                              pooled_height, pooled_width, sampling_ratio, aligned, raw);
    };
    if (quint8)
      run(c10::quint8());
    else if (qint8)
      run(c10::qint8());
    else
      run(c10::qint32());
  }
  return aten::tensor_op("aten::_make_per_tensor_quantized_tensor", "", raw, scale, zero_point);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, QuantizedCPU, m) { m.impl("roi_align", TORCH_BOX(&roi_align_quantized)); }

}  // namespace fastmask
