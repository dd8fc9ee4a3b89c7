// Checking a CUDA launch from a *_cuda_ops.cpp binding, with an actionable message.
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

namespace fastmask {

inline void check_cuda_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "fastmask.", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err),
              err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction
                  ? " (this build has no kernels for this GPU's architecture; rebuild with "
                    "TORCH_CUDA_ARCH_LIST including it, see python -m fastmask.collect_env)"
                  : "");
}

}  // namespace fastmask
