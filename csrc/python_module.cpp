// The `fastmask._C` Python module, built per CPython: what the op libraries were built for,
// and their loader. It uses no torch API at all; the kernels live in the op libraries
// (fastmask/lib/libfastmask_ops*.so), which depend on PyTorch's stable ABI only and so serve
// every torch from FASTMASK_TORCH_TARGET on.
#include <dlfcn.h>
#include <pybind11/pybind11.h>

#include <string>

#ifndef FASTMASK_TORCH_TARGET
#error "setup.py defines FASTMASK_TORCH_TARGET"
#endif
#ifndef FASTMASK_CUDA_VERSION
#define FASTMASK_CUDA_VERSION ""
#endif
#ifndef FASTMASK_CUDA_ARCHS
#define FASTMASK_CUDA_ARCHS ""
#endif

namespace {

// dlopen()s an op library: its static initializers register the fastmask:: ops with PyTorch's
// dispatcher (torch must be imported first: the library needs libtorch's symbols). The handle is
// kept for the life of the process. A failure raises ImportError with the loader's message.
void load_library(const std::string& path) {
  if (dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) == nullptr) {
    const char* error = dlerror();
    throw pybind11::import_error(error ? std::string(error) : "cannot load " + path);
  }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastmask: the op libraries' build facts and loader (the ops are torch.ops.fastmask.*)";
#ifdef FASTMASK_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("torch_target") = FASTMASK_TORCH_TARGET;
  m.attr("cuda_version") = FASTMASK_CUDA_VERSION;
  m.attr("cuda_archs") = FASTMASK_CUDA_ARCHS;
  m.def("load_library", &load_library, pybind11::arg("path"),
        "Loads an op library (registering its ops); raises ImportError with the loader's message.");
}
