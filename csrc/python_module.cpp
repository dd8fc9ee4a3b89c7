// The `fastmask._C` Python module. Loading it registers the ops (ops.cpp and
// the TORCH_LIBRARY_IMPL blocks); the module itself reports how it was built.
#include <pybind11/pybind11.h>

#ifndef FASTMASK_TORCH_VERSION
#define FASTMASK_TORCH_VERSION "unknown"
#endif
#ifndef FASTMASK_CUDA_VERSION
#define FASTMASK_CUDA_VERSION ""
#endif
#ifndef FASTMASK_CUDA_ARCHS
#define FASTMASK_CUDA_ARCHS ""
#endif

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
