// The messages of CUDA failures around a fastmask op, separate from the CUDA runtime calls
// (common/cuda_launch.h) so that a CPU-only test can check them (cpp_test/test_cuda_errors.cpp).
#pragma once

#include <driver_types.h>

#include <string>

namespace fastmask {

// A fault raised by a kernel while it ran (illegal address, device assert, ...): sticky, the
// CUDA context is unusable from then on, and the call that reports it is only the first to
// notice, not the culprit.
inline bool is_device_fault(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

inline std::string fault_advice() {
  return " The CUDA context is unusable after a device fault: restart the process. Rerun with "
         "CUDA_LAUNCH_BLOCKING=1 to find the kernel that faulted.";
}

// An error already pending on this thread when `op` was called (not raised by it).
inline std::string pending_error_message(const char* op, cudaError_t error, const char* name, const char* text) {
  std::string message = std::string("fastmask.") + op + ": a CUDA error from earlier work on this device was " +
                        "pending before this op launched anything: " + name + " (" + text + ").";
  if (is_device_fault(error)) return message + fault_advice();
  return message + " It has been cleared (not raised by fastmask; rerun with CUDA_LAUNCH_BLOCKING=1 to find its "
                   "source).";
}

// The error seen right after launching `kernel` of `op`.
inline std::string launch_error_message(const char* op, const char* kernel, cudaError_t error, const char* name,
                                        const char* text) {
  const std::string what = std::string(name) + " (" + text + ")";
  if (is_device_fault(error))
    return std::string("fastmask.") + op + ": a CUDA kernel faulted on the device: " + what +
           ", seen when launching " + kernel + " (the fault may come from an earlier kernel of this op, or " +
           "from work queued before it)." + fault_advice();
  std::string message = std::string("fastmask.") + op + ": CUDA kernel " + kernel + " failed to launch: " + what;
  if (error == cudaErrorNoKernelImageForDevice || error == cudaErrorInvalidDeviceFunction)
    message += " (this build has no kernels for this GPU's architecture; install a fastmask build that covers it, "
               "or rebuild with TORCH_CUDA_ARCH_LIST including it; see python -m fastmask.collect_env)";
  return message;
}

}  // namespace fastmask
