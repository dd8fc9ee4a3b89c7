// The `fastmask` operator library: every schema in one place (backends add
// kernels with TORCH_LIBRARY_IMPL next to their code), and the `fastmask._C`
// Python module, which reports how it was built.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#ifndef FASTMASK_TORCH_VERSION
#define FASTMASK_TORCH_VERSION "unknown"
#endif
#ifndef FASTMASK_CUDA_VERSION
#define FASTMASK_CUDA_VERSION ""
#endif
#ifndef FASTMASK_CUDA_ARCHS
#define FASTMASK_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(fastmask, m) {
  // `deterministic` only selects the backward kernel (CUDA); it is an argument
  // of the forward op so that autograd can hand it to the backward.
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned, bool deterministic=False) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned, bool channels_last, bool deterministic) -> Tensor");
  m.def(
      "multi_level_roi_align(Tensor[] features, Tensor rois, Tensor levels, float[] spatial_scales, "
      "int pooled_height, int pooled_width, int sampling_ratio, bool aligned, "
      "bool deterministic=False) -> Tensor");
  m.def(
      "multi_level_roi_align_backward(Tensor grad, Tensor rois, Tensor levels, "
      "float[] spatial_scales, SymInt[] heights, SymInt[] widths, SymInt batch_size, "
      "SymInt channels, int pooled_height, int pooled_width, int sampling_ratio, bool aligned, "
      "bool channels_last, bool deterministic) -> Tensor[]");
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastmask compiled kernels (ops are registered under torch.ops.fastmask)";
#ifdef FASTMASK_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("torch_version") = FASTMASK_TORCH_VERSION;
  m.attr("cuda_version") = FASTMASK_CUDA_VERSION;
  m.attr("cuda_archs") = FASTMASK_CUDA_ARCHS;
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
