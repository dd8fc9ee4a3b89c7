// Running and checking CUDA launchers from a *_cuda_ops.cpp binding, with
// errors that name the op and the kernel and say what to do.
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include "common/launch_status.h"

namespace fastmask {

// Launches `launcher()` (which returns a LaunchStatus) for `op` and raises on
// failure. An error already pending on this thread before the launch came from
// earlier work on the device, not from this op: it is reported as such
// instead of being taken for this op's launch error.
template <typename Launcher>
void run_cuda_launcher(const char* op, Launcher&& launcher) {
  const cudaError_t pending = cudaPeekAtLastError();
  TORCH_CHECK(pending == cudaSuccess, "fastmask.", op,
              ": a CUDA error from earlier work on this device was pending before this op launched "
              "anything: ", cudaGetErrorString(pending),
              " (not raised by fastmask; rerun with CUDA_LAUNCH_BLOCKING=1 to find its source)");
  const LaunchStatus status = launcher();
  TORCH_CHECK(status.ok(), "fastmask.", op, ": CUDA kernel ", status.kernel,
              " failed to launch: ", cudaGetErrorString(status.error),
              status.error == cudaErrorNoKernelImageForDevice || status.error == cudaErrorInvalidDeviceFunction
                  ? " (this build has no kernels for this GPU's architecture; rebuild with "
                    "TORCH_CUDA_ARCH_LIST including it, see python -m fastmask.collect_env)"
                  : "");
}

}  // namespace fastmask
