// Autocast (mixed precision) kernels for the RoIAlign and NMS ops, registered as torchvision
// registers its own: inside an autocast region, floating inputs (but float64) are cast to
// float32 and the op runs with autocast excluded; a pooled output is cast back to the features'
// dtype, NMS returns its int64 indices. So NMS on bf16/fp16 boxes under autocast computes the
// IoU in float32, as torchvision does. Outside autocast the ops keep their native fp16/bf16
// paths. The casts are ordinary differentiable ops, so gradients still reach the inputs.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

namespace fastmask {
namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

template <c10::DispatchKey AutocastKey, c10::DeviceType Device>
struct AutocastOps {
  template <typename T>
  static T to_float(const T& arg) {
    return at::autocast::cached_cast(at::kFloat, arg, Device);
  }

  static at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                              bool aligned, bool deterministic) {
    static const auto op = find_op<decltype(roi_align)>("fastmask::roi_align");
    c10::impl::ExcludeDispatchKeyGuard no_autocast(AutocastKey);
    return op.call(to_float(input), to_float(rois), spatial_scale, pooled_height, pooled_width,
                   sampling_ratio, aligned, deterministic)
        .to(input.scalar_type());
  }

  static at::Tensor multi_level_roi_align(at::TensorList features, const at::Tensor& rois,
                                          const at::Tensor& levels, at::ArrayRef<double> spatial_scales,
                                          int64_t pooled_height, int64_t pooled_width,
                                          int64_t sampling_ratio, bool aligned, bool deterministic) {
    static const auto op = find_op<decltype(multi_level_roi_align)>("fastmask::multi_level_roi_align");
    c10::impl::ExcludeDispatchKeyGuard no_autocast(AutocastKey);
    const std::vector<at::Tensor> features_float = at::autocast::cached_cast(at::kFloat, features, Device);
    at::Tensor output = op.call(features_float, to_float(rois), levels, spatial_scales, pooled_height,
                                pooled_width, sampling_ratio, aligned, deterministic);
    return output.to(features[0].scalar_type());  // the op has rejected an empty list
  }

  static at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
    static const auto op = find_op<decltype(nms)>("fastmask::nms");
    c10::impl::ExcludeDispatchKeyGuard no_autocast(AutocastKey);
    return op.call(to_float(boxes), to_float(scores), iou_threshold);
  }

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double iou_threshold) {
    static const auto op = find_op<decltype(batched_nms)>("fastmask::batched_nms");
    c10::impl::ExcludeDispatchKeyGuard no_autocast(AutocastKey);
    return op.call(to_float(boxes), to_float(scores), idxs, iou_threshold);
  }

  static std::tuple<at::Tensor, at::Tensor> multi_image_nms(const at::Tensor& boxes, const at::Tensor& scores,
                                                            const std::optional<at::Tensor>& idxs,
                                                            const std::optional<at::Tensor>& valid,
                                                            double iou_threshold, int64_t max_output) {
    static const auto op = find_op<decltype(multi_image_nms)>("fastmask::multi_image_nms");
    c10::impl::ExcludeDispatchKeyGuard no_autocast(AutocastKey);
    return op.call(to_float(boxes), to_float(scores), idxs, valid, iou_threshold, max_output);
  }

  static void register_impls(torch::Library& m) {
    m.impl("roi_align", &roi_align);
    m.impl("multi_level_roi_align", &multi_level_roi_align);
    m.impl("nms", &nms);
    m.impl("batched_nms", &batched_nms);
    m.impl("multi_image_nms", &multi_image_nms);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, AutocastCPU, m) {
  AutocastOps<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>::register_impls(m);
}

// Registered in CPU-only builds too: a CUDA tensor then reaches the CUDA stub, which explains.
TORCH_LIBRARY_IMPL(fastmask, AutocastCUDA, m) {
  AutocastOps<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>::register_impls(m);
}

}  // namespace fastmask
