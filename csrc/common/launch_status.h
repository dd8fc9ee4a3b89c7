// What a *_cuda.cu launcher returns: the first launch error and the kernel
// that raised it. No ATen here, so the .cu files stay quick to compile.
#pragma once

#include <cuda_runtime_api.h>

namespace fastmask {

struct LaunchStatus {
  cudaError_t error = cudaSuccess;
  const char* kernel = "";
  bool ok() const { return error == cudaSuccess; }
};

}  // namespace fastmask

// Right after each kernel launch in a launcher: return its error, naming the kernel.
#define FASTMASK_RETURN_IF_LAUNCH_FAILED(kernel_name)                         \
  do {                                                                        \
    const cudaError_t fastmask_launch_error_ = cudaGetLastError();            \
    if (fastmask_launch_error_ != cudaSuccess)                                \
      return ::fastmask::LaunchStatus{fastmask_launch_error_, kernel_name};   \
  } while (0)
