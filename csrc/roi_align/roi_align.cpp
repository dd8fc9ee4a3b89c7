#include "roi_align.h"

#include <cmath>

#include "common/scalar_kind_torch.h"
#include "common/stable_aten.h"

namespace fastmask {
namespace {

// Accumulation type: float64 features accumulate in float64, all others in float32.
ScalarType acc_type(ScalarType t) { return t == ScalarType::Double ? ScalarType::Double : ScalarType::Float; }

void check_pooling_args(int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  FASTMASK_CHECK_VALUE(pooled_height > 0 && pooled_width > 0,
                       "fastmask.roi_align: output_size must be positive, got (", pooled_height, ", ", pooled_width,
                       ")");
  FASTMASK_CHECK_VALUE(sampling_ratio <= kMaxSamplingRatio, "fastmask.roi_align: sampling_ratio must be <= ",
                       kMaxSamplingRatio, " (or <= 0 for adaptive sampling), got ", sampling_ratio);
}

void check_rois(const Tensor& rois, const Device& device) {
  FASTMASK_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5,
                       "fastmask.roi_align: rois must be a [K, 5] tensor (batch index, x1, y1, x2, y2), got shape ",
                       shape(rois));
  FASTMASK_CHECK_TYPE(is_floating(rois.scalar_type()), "fastmask.roi_align: rois must be a floating-point tensor, got ",
                      rois.scalar_type());
  FASTMASK_CHECK_VALUE(rois.device() == device, "fastmask.roi_align: rois is on ", rois.device(),
                       " but the features are on ", device);
}

void check_scale(double s) {
  FASTMASK_CHECK_VALUE(std::isfinite(s) && s > 0, "fastmask.roi_align: spatial_scale must be finite and positive, got ",
                       s);
}

// Host-side check of batch (and level) indices, for backends that can read
// the RoIs without a device synchronisation.
template <typename A>
void check_indices(const Tensor& rois_acc, const std::optional<Tensor>& levels, int64_t batch_size,
                   int64_t num_levels) {
  const A* rois = static_cast<const A*>(rois_acc.const_data_ptr());
  for (int64_t k = 0; k < rois_acc.size(0); ++k) {
    const double b = static_cast<double>(rois[5 * k]);
    FASTMASK_CHECK_INDEX(std::isfinite(b) && std::trunc(b) >= 0 && std::trunc(b) < batch_size, "fastmask.roi_align: rois[",
                         k, ", 0] (batch index) is ", b, ", outside the batch of ", batch_size, " feature maps");
  }
  if (!levels) return;
  const Tensor lv = aten::contiguous(*levels);
  const int64_t* l = static_cast<const int64_t*>(lv.const_data_ptr());
  for (int64_t k = 0; k < lv.numel(); ++k) {
    FASTMASK_CHECK_INDEX(l[k] >= 0 && l[k] < num_levels, "fastmask.multi_level_roi_align: levels[", k, "] is ", l[k],
                         ", but there are ", num_levels, " feature levels");
  }
}

// Fields common to forward and backward. Returns the RoIs in the accumulation
// type (kept alive by the caller while the params point into it).
Tensor fill_common(RoIAlignParams& p, const RoIAlignBackend& backend, const Tensor& rois,
                   const std::optional<Tensor>& levels, DoubleArrayRef spatial_scales, ScalarType dtype,
                   const Device& device, int64_t batch_size, int64_t channels, int64_t pooled_height,
                   int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_pooling_args(pooled_height, pooled_width, sampling_ratio);
  check_rois(rois, device);
  const int64_t num_levels = static_cast<int64_t>(spatial_scales.size());
  FASTMASK_CHECK_VALUE(num_levels >= 1 && num_levels <= kMaxLevels, "fastmask.multi_level_roi_align: between 1 and ",
                       kMaxLevels, " feature levels are supported, got ", num_levels);
  for (double s : spatial_scales) check_scale(s);
  if (levels) {
    FASTMASK_CHECK_VALUE(levels->dim() == 1 && levels->size(0) == rois.size(0),
                         "fastmask.multi_level_roi_align: levels must be a [K] tensor with one level per RoI (K = ",
                         rois.size(0), "), got shape ", shape(*levels));
    FASTMASK_CHECK_TYPE(levels->scalar_type() == ScalarType::Long,
                        "fastmask.multi_level_roi_align: levels must be int64, got ", levels->scalar_type());
    FASTMASK_CHECK_VALUE(levels->device() == device, "fastmask.multi_level_roi_align: levels is on ",
                         levels->device(), " but the features are on ", device);
  }
  const ScalarType acc = acc_type(dtype);
  Tensor rois_acc = aten::contiguous(aten::to(rois, acc));
  if (backend.check_indices) {
    if (acc == ScalarType::Double)
      check_indices<double>(rois_acc, levels, batch_size, num_levels);
    else
      check_indices<float>(rois_acc, levels, batch_size, num_levels);
  }

  p.num_levels = static_cast<int>(num_levels);
  for (int64_t l = 0; l < num_levels; ++l) p.levels[l].spatial_scale = spatial_scales[l];
  p.rois = rois_acc.const_data_ptr();
  p.num_rois = rois.size(0);
  p.batch_size = batch_size;
  p.channels = channels;
  p.pooled_height = pooled_height;
  p.pooled_width = pooled_width;
  p.sampling_ratio = sampling_ratio;
  p.aligned = aligned;
  p.dtype = scalar_kind(dtype, "fastmask.roi_align: input (features)");
  return rois_acc;
}

}  // namespace

RoIBuckets bucket_rois(const Tensor& rois_acc, const std::optional<Tensor>& levels, int64_t batch_size,
                       int64_t num_levels) {
  using aten::scalar;
  const Device device = rois_acc.device();
  const auto index = [&](int64_t v) { return scalar(static_cast<double>(v), ScalarType::Long, device); };
  // The image test is roi_geometry's (in the RoIs' own type, NaN failing it), so every RoI
  // the kernels see on level l of image n is in bucket (l, n).
  const Tensor b = aten::select(rois_acc, 1, 0);
  const Tensor in_batch = aten::logical_and(aten::gt(b, scalar(-1, ScalarType::Double)),
                                            aten::lt(b, scalar(static_cast<double>(batch_size), ScalarType::Double)));
  const Tensor image = aten::to(
      aten::trunc(aten::where(in_batch, b, scalar(0, rois_acc.scalar_type(), device))), ScalarType::Long);
  Tensor key = image;
  Tensor in_range = in_batch;
  if (levels) {
    key = aten::add_integers(aten::mul(*levels, index(batch_size)), image);
    in_range = aten::logical_and(aten::logical_and(in_range, aten::ge(*levels, index(0))),
                                 aten::lt(*levels, index(num_levels)));
  }
  const int64_t num_buckets = num_levels * batch_size;
  key = aten::where(in_range, key, index(num_buckets));
  // Stable: RoIs stay in increasing order within a bucket (the kernels' order of additions).
  const auto [sorted, order] = aten::sort(key, 0, /*descending=*/false);
  return {order, aten::searchsorted(sorted, aten::arange(num_buckets + 1, device))};
}

Tensor multi_level_roi_align_forward(const RoIAlignBackend& backend, const TensorList& features, const Tensor& rois,
                                     const std::optional<Tensor>& levels, DoubleArrayRef spatial_scales,
                                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                     bool aligned) {
  FASTMASK_CHECK_VALUE(!features.empty(), "fastmask.multi_level_roi_align: features is empty");
  FASTMASK_CHECK_VALUE(features.size() == spatial_scales.size(), "fastmask.multi_level_roi_align: got ",
                       features.size(), " feature maps but ", spatial_scales.size(), " spatial scales");
  const Tensor& first = features[0];
  for (size_t l = 0; l < features.size(); ++l) {
    const Tensor& f = features[l];
    FASTMASK_CHECK_VALUE(f.dim() == 4, "fastmask.roi_align: input (feature level ", l,
                         ") must be a 4-D [N, C, H, W] tensor, got shape ", shape(f));
    FASTMASK_CHECK_VALUE(f.size(0) == first.size(0) && f.size(1) == first.size(1),
                         "fastmask.multi_level_roi_align: every feature level must have the same batch size and "
                         "channels; level 0 has ",
                         shape(first), ", level ", l, " has ", shape(f));
    FASTMASK_CHECK_TYPE(f.scalar_type() == first.scalar_type(),
                        "fastmask.multi_level_roi_align: every feature level must have the same dtype");
    FASTMASK_CHECK_VALUE(f.device() == first.device(),
                         "fastmask.multi_level_roi_align: every feature level must be on the same device");
  }
  const DeviceScope device_scope(first);

  RoIAlignParams p;
  const Tensor rois_acc = fill_common(p, backend, rois, levels, spatial_scales, first.scalar_type(), first.device(),
                                      first.size(0), first.size(1), pooled_height, pooled_width, sampling_ratio,
                                      aligned);

  p.channels_last = is_channels_last(first);
  const MemoryFormat format = memory_format(p.channels_last);
  TensorList dense;
  for (size_t l = 0; l < features.size(); ++l) {
    dense.push_back(aten::contiguous(features[l], format));
    p.levels[l].features = dense[l].const_data_ptr();
    p.levels[l].height = dense[l].size(2);
    p.levels[l].width = dense[l].size(3);
  }
  const std::optional<Tensor> levels_c = levels ? std::optional<Tensor>(aten::contiguous(*levels)) : std::nullopt;
  p.roi_levels = levels_c ? static_cast<const int64_t*>(levels_c->const_data_ptr()) : nullptr;

  Tensor output = aten::empty({p.num_rois, p.channels, pooled_height, pooled_width}, first.scalar_type(),
                              first.device(), format);
  // The kernels give RoIs on an empty level zeros (level_roi_geometry), without reading it.
  if (output.numel() == 0) return output;
  p.output = output.mutable_data_ptr();
  backend.forward(p);
  return output;
}

std::vector<Tensor> multi_level_roi_align_backward(const RoIAlignBackend& backend, const Tensor& grad,
                                                   const Tensor& rois, const std::optional<Tensor>& levels,
                                                   DoubleArrayRef spatial_scales, IntArrayRef heights,
                                                   IntArrayRef widths, int64_t batch_size, int64_t channels,
                                                   int64_t pooled_height, int64_t pooled_width,
                                                   int64_t sampling_ratio, bool aligned, bool channels_last) {
  FASTMASK_CHECK_VALUE(heights.size() == spatial_scales.size() && widths.size() == spatial_scales.size(),
                       "fastmask.roi_align_backward: one height, width and scale per level expected");
  FASTMASK_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                           grad.size(2) == pooled_height && grad.size(3) == pooled_width,
                       "fastmask.roi_align_backward: grad must have shape [K, C, PH, PW] = [", rois.size(0), ", ",
                       channels, ", ", pooled_height, ", ", pooled_width, "], got ", shape(grad));
  const DeviceScope device_scope(grad);
  RoIAlignParams p;
  const Tensor rois_acc = fill_common(p, backend, rois, levels, spatial_scales, grad.scalar_type(), grad.device(),
                                      batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned);
  p.channels_last = channels_last || backend.channels_last_gradient;
  const MemoryFormat format = memory_format(p.channels_last);
  const ScalarType acc = acc_type(grad.scalar_type());
  std::vector<Tensor> grads;
  for (size_t l = 0; l < heights.size(); ++l) {
    grads.push_back(aten::zeros({batch_size, channels, heights[l], widths[l]}, acc, grad.device(), format));
    p.levels[l].grad_features = grads[l].mutable_data_ptr();
    p.levels[l].height = heights[l];
    p.levels[l].width = widths[l];
  }
  const std::optional<Tensor> levels_c = levels ? std::optional<Tensor>(aten::contiguous(*levels)) : std::nullopt;
  p.roi_levels = levels_c ? static_cast<const int64_t*>(levels_c->const_data_ptr()) : nullptr;
  // The deterministic kernel's threads own channels: handed the gradient channels-innermost (one
  // copy), a warp's loads are contiguous instead of PH * PW apart. The values are the same.
  const Tensor grad_output = backend.channels_last_gradient ? aten::contiguous(grad, MemoryFormat::ChannelsLast) : grad;
  p.grad_output = grad_output.const_data_ptr();
  for (int d = 0; d < 4; ++d) p.grad_output_strides[d] = grad_output.stride(d);

  // RoIs on an empty level get no gradient (level_roi_geometry); the others do.
  bool any_pixel = false;
  for (const Tensor& g : grads) any_pixel = any_pixel || g.numel() > 0;
  std::optional<RoIBuckets> buckets;  // alive until the kernels are queued (the allocator is stream-ordered)
  if (grad.numel() > 0 && any_pixel) {
    if (backend.bucket_rois) {
      buckets = bucket_rois(rois_acc, levels, batch_size, p.num_levels);
      p.roi_order = static_cast<const int64_t*>(buckets->order.const_data_ptr());
      p.bucket_begin = static_cast<const int64_t*>(buckets->begin.const_data_ptr());
    }
    backend.backward(p);
  }
  const MemoryFormat requested = memory_format(channels_last);
  for (Tensor& g : grads) g = aten::contiguous(aten::to(g, grad.scalar_type()), requested);
  return grads;
}

}  // namespace fastmask
