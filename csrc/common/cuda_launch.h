// Running and checking CUDA launchers from a *_cuda_ops.cpp binding, on PyTorch's current
// stream (through the stable ABI), with errors that name the op and the kernel and say what
// to do.
#pragma once

#include <cuda_runtime_api.h>

#include "common/cuda_errors.h"
#include "common/launch_status.h"
#include "common/stable.h"

namespace fastmask {

// PyTorch's current CUDA stream on the current device (a DeviceScope has made the tensors'
// device current).
inline cudaStream_t current_cuda_stream() {
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(
      aoti_torch_get_current_cuda_stream(torch::stable::accelerator::getCurrentDeviceIndex(), &stream));
  return static_cast<cudaStream_t>(stream);
}

// Launches `launcher(stream)` (which returns a LaunchStatus) for `op` on the current stream and
// raises on failure. An error already pending on this thread came from earlier work, not from
// this op: it is reported as such, and cleared (cudaGetLastError) so that the next call does
// not report it again.
template <typename Launcher>
void run_cuda_launcher(const char* op, Launcher&& launcher) {
  const cudaError_t pending = cudaGetLastError();
  if (pending != cudaSuccess)
    throw_error(ErrorKind::kRuntime,
                pending_error_message(op, pending, cudaGetErrorName(pending), cudaGetErrorString(pending)));
  const LaunchStatus status = launcher(current_cuda_stream());
  if (!status.ok())
    throw_error(ErrorKind::kRuntime, launch_error_message(op, status.kernel, status.error,
                                                          cudaGetErrorName(status.error),
                                                          cudaGetErrorString(status.error)));
}

}  // namespace fastmask
