#include "roi_align.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/irange.h>

#include <cmath>

#include "common/scalar_kind_aten.h"
#include "roi_align_cpu.h"
#include "roi_align_registration.h"

namespace fastmask {
namespace {

// Accumulation type: float64 features accumulate in float64, all others in float32.
at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_pooling_args(int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  TORCH_CHECK_VALUE(pooled_height > 0 && pooled_width > 0,
                    "fastmask.roi_align: output_size must be positive, got (", pooled_height, ", ",
                    pooled_width, ")");
  TORCH_CHECK_VALUE(sampling_ratio <= kMaxSamplingRatio,
                    "fastmask.roi_align: sampling_ratio must be <= ", kMaxSamplingRatio,
                    " (or <= 0 for adaptive sampling), got ", sampling_ratio);
}

void check_rois(const at::Tensor& rois, const c10::Device& device) {
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5,
                    "fastmask.roi_align: rois must be a [K, 5] tensor (batch index, x1, y1, x2, y2), "
                    "got shape ", rois.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(rois.scalar_type()),
                   "fastmask.roi_align: rois must be a floating-point tensor, got ", rois.scalar_type());
  TORCH_CHECK_VALUE(rois.device() == device, "fastmask.roi_align: rois is on ", rois.device(),
                    " but the features are on ", device);
}

void check_scale(double s) {
  TORCH_CHECK_VALUE(std::isfinite(s) && s > 0,
                    "fastmask.roi_align: spatial_scale must be finite and positive, got ", s);
}

// Host-side check of batch (and level) indices, for backends that can read
// the RoIs without a device synchronisation.
void check_indices(const at::Tensor& rois_acc, const c10::optional<at::Tensor>& levels,
                   int64_t batch_size, int64_t num_levels) {
  const at::Tensor batch = rois_acc.select(1, 0).to(at::kDouble).contiguous();
  const double* b = batch.const_data_ptr<double>();
  for (const auto k : c10::irange(batch.numel())) {
    TORCH_CHECK_INDEX(std::isfinite(b[k]) && std::trunc(b[k]) >= 0 && std::trunc(b[k]) < batch_size,
                      "fastmask.roi_align: rois[", k, ", 0] (batch index) is ", b[k],
                      ", outside the batch of ", batch_size, " feature maps");
  }
  if (!levels) return;
  const at::Tensor lv = levels->contiguous();
  const int64_t* l = lv.const_data_ptr<int64_t>();
  for (const auto k : c10::irange(lv.numel())) {
    TORCH_CHECK_INDEX(l[k] >= 0 && l[k] < num_levels, "fastmask.multi_level_roi_align: levels[", k,
                      "] is ", l[k], ", but there are ", num_levels, " feature levels");
  }
}

// Fields common to forward and backward. Returns the RoIs in the accumulation
// type (kept alive by the caller while the params point into it).
at::Tensor fill_common(RoIAlignParams& p, const RoIAlignBackend& backend, const at::Tensor& rois,
                       const c10::optional<at::Tensor>& levels, at::ArrayRef<double> spatial_scales,
                       at::ScalarType dtype, c10::Device device, int64_t batch_size,
                       int64_t channels, int64_t pooled_height, int64_t pooled_width,
                       int64_t sampling_ratio, bool aligned) {
  check_pooling_args(pooled_height, pooled_width, sampling_ratio);
  check_rois(rois, device);
  const int64_t num_levels = static_cast<int64_t>(spatial_scales.size());
  TORCH_CHECK_VALUE(num_levels >= 1 && num_levels <= kMaxLevels,
                    "fastmask.multi_level_roi_align: between 1 and ", kMaxLevels,
                    " feature levels are supported, got ", num_levels);
  for (double s : spatial_scales) check_scale(s);
  if (levels) {
    TORCH_CHECK_VALUE(levels->dim() == 1 && levels->size(0) == rois.size(0),
                      "fastmask.multi_level_roi_align: levels must be a [K] tensor with one level "
                      "per RoI (K = ", rois.size(0), "), got shape ", levels->sizes());
    TORCH_CHECK_TYPE(levels->scalar_type() == at::kLong,
                     "fastmask.multi_level_roi_align: levels must be int64, got ", levels->scalar_type());
    TORCH_CHECK_VALUE(levels->device() == device, "fastmask.multi_level_roi_align: levels is on ",
                      levels->device(), " but the features are on ", device);
  }
  at::Tensor rois_acc = rois.to(acc_type(dtype)).contiguous();
  if (backend.check_indices) check_indices(rois_acc, levels, batch_size, num_levels);

  p.num_levels = static_cast<int>(num_levels);
  for (const auto l : c10::irange(num_levels)) p.levels[l].spatial_scale = spatial_scales[l];
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

RoIBuckets bucket_rois(const at::Tensor& rois_acc, const c10::optional<at::Tensor>& levels,
                       int64_t batch_size, int64_t num_levels) {
  // The image test is roi_geometry's (in the RoIs' own type, NaN failing it), so every RoI
  // the kernels see on level l of image n is in bucket (l, n).
  const at::Tensor b = rois_acc.select(1, 0);
  const at::Tensor in_batch = b.gt(-1).logical_and_(b.lt(batch_size));
  const at::Tensor image = at::where(in_batch, b, 0).trunc().to(at::kLong);
  at::Tensor key = image;
  at::Tensor in_range = in_batch;
  if (levels) {
    key = *levels * batch_size + image;
    in_range = in_range.logical_and(levels->ge(0)).logical_and_(levels->lt(num_levels));
  }
  const int64_t num_buckets = num_levels * batch_size;
  key = at::where(in_range, key, num_buckets);
  // Stable: RoIs stay in increasing order within a bucket (the kernels' order of additions).
  const auto [sorted, order] = key.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  at::Tensor begin = at::searchsorted(sorted, at::arange(num_buckets + 1, key.options()));
  return {order, begin};
}

at::Tensor multi_level_roi_align_forward(const RoIAlignBackend& backend, at::TensorList features,
                                         const at::Tensor& rois, const c10::optional<at::Tensor>& levels,
                                         at::ArrayRef<double> spatial_scales, int64_t pooled_height,
                                         int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK_VALUE(!features.empty(), "fastmask.multi_level_roi_align: features is empty");
  TORCH_CHECK_VALUE(features.size() == spatial_scales.size(),
                    "fastmask.multi_level_roi_align: got ", features.size(), " feature maps but ",
                    spatial_scales.size(), " spatial scales");
  const at::Tensor& first = features[0];
  for (const auto l : c10::irange(features.size())) {
    const at::Tensor& f = features[l];
    TORCH_CHECK_VALUE(f.dim() == 4, "fastmask.roi_align: input (feature level ", l,
                      ") must be a 4-D [N, C, H, W] tensor, got shape ", f.sizes());
    TORCH_CHECK_VALUE(f.size(0) == first.size(0) && f.size(1) == first.size(1),
                      "fastmask.multi_level_roi_align: every feature level must have the same batch "
                      "size and channels; level 0 has ", first.sizes(), ", level ", l, " has ", f.sizes());
    TORCH_CHECK_TYPE(f.scalar_type() == first.scalar_type(),
                     "fastmask.multi_level_roi_align: every feature level must have the same dtype");
    TORCH_CHECK_VALUE(f.device() == first.device(),
                      "fastmask.multi_level_roi_align: every feature level must be on the same device");
  }
  const c10::OptionalDeviceGuard device_guard(first.device());

  RoIAlignParams p;
  const at::Tensor rois_acc =
      fill_common(p, backend, rois, levels, spatial_scales, first.scalar_type(), first.device(),
                  first.size(0), first.size(1), pooled_height, pooled_width, sampling_ratio, aligned);

  // channels_last when the first level is (and is not also plain contiguous).
  p.channels_last = !first.is_contiguous() && first.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  std::vector<at::Tensor> dense(features.size());
  for (const auto l : c10::irange(features.size())) {
    dense[l] = features[l].contiguous(format);
    p.levels[l].features = dense[l].const_data_ptr();
    p.levels[l].height = dense[l].size(2);
    p.levels[l].width = dense[l].size(3);
  }
  const at::Tensor levels_c = levels ? levels->contiguous() : at::Tensor();
  p.roi_levels = levels ? levels_c.const_data_ptr<int64_t>() : nullptr;

  at::Tensor output = at::empty({p.num_rois, p.channels, pooled_height, pooled_width},
                                first.options().memory_format(format));
  p.output = output.data_ptr();
  // The kernels give RoIs on an empty level zeros (level_roi_geometry), without reading it.
  if (output.numel() == 0) return output;
  backend.forward(p);
  return output;
}

std::vector<at::Tensor> multi_level_roi_align_backward(
    const RoIAlignBackend& backend, const at::Tensor& grad, const at::Tensor& rois,
    const c10::optional<at::Tensor>& levels, at::ArrayRef<double> spatial_scales,
    at::IntArrayRef heights, at::IntArrayRef widths, int64_t batch_size, int64_t channels,
    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned,
    bool channels_last) {
  TORCH_CHECK_VALUE(heights.size() == spatial_scales.size() && widths.size() == spatial_scales.size(),
                    "fastmask.roi_align_backward: one height, width and scale per level expected");
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                        grad.size(2) == pooled_height && grad.size(3) == pooled_width,
                    "fastmask.roi_align_backward: grad must have shape [K, C, PH, PW] = [",
                    rois.size(0), ", ", channels, ", ", pooled_height, ", ", pooled_width, "], got ",
                    grad.sizes());
  const c10::OptionalDeviceGuard device_guard(grad.device());
  RoIAlignParams p;
  const at::Tensor rois_acc =
      fill_common(p, backend, rois, levels, spatial_scales, grad.scalar_type(), grad.device(),
                  batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned);
  p.channels_last = channels_last || backend.channels_last_gradient;
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto acc_options = grad.options().dtype(acc_type(grad.scalar_type())).memory_format(format);
  std::vector<at::Tensor> grads(heights.size());
  for (const auto l : c10::irange(heights.size())) {
    // at::empty honours the memory format in the options (at::zeros does not).
    grads[l] = at::empty({batch_size, channels, heights[l], widths[l]}, acc_options).zero_();
    p.levels[l].grad_features = grads[l].data_ptr();
    p.levels[l].height = heights[l];
    p.levels[l].width = widths[l];
  }
  const at::Tensor levels_c = levels ? levels->contiguous() : at::Tensor();
  p.roi_levels = levels ? levels_c.const_data_ptr<int64_t>() : nullptr;
  p.grad_output = grad.const_data_ptr();
  for (const auto d : c10::irange(4)) p.grad_output_strides[d] = grad.stride(d);

  // RoIs on an empty level get no gradient (level_roi_geometry); the others do.
  bool any_pixel = false;
  for (const auto& g : grads) any_pixel = any_pixel || g.numel() > 0;
  RoIBuckets buckets;  // alive until the kernels are queued (the allocator is stream-ordered)
  if (grad.numel() > 0 && any_pixel) {
    if (backend.bucket_rois) {
      buckets = bucket_rois(rois_acc, levels, batch_size, p.num_levels);
      p.roi_order = buckets.order.const_data_ptr<int64_t>();
      p.bucket_begin = buckets.begin.const_data_ptr<int64_t>();
    }
    backend.backward(p);
  }
  const auto requested = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  for (auto& g : grads) g = g.to(grad.scalar_type()).contiguous(requested);
  return grads;
}

namespace {

RoIAlignBackend cpu_backend(bool /*deterministic: the CPU kernels always are*/) {
  RoIAlignBackend b;
  b.forward = roi_align_forward_cpu;
  b.backward = roi_align_backward_cpu;
  b.check_indices = true;
  return b;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CPU, m) { RoIAlignOps<cpu_backend>::register_impls(m); }

}  // namespace fastmask
