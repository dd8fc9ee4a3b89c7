// C++ test of csrc/common/cuda_errors.h, built and run by CMakeLists.txt (ctest) wherever the
// CUDA headers are (no GPU, no CUDA runtime library); non-zero on failure. The messages a
// CUDA failure around a fastmask op raises: an error pending from earlier work is reported as
// such and, when it is not a device fault, as cleared; a device fault seen when launching the
// second kernel of an op is reported as a fault, not as that kernel's launch failure; a missing
// architecture says how to get one.
#include <cstdio>
#include <string>

#include "common/cuda_errors.h"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what, const std::string& message) {
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n  message: %s\n", what.c_str(), message.c_str());
  }
}

bool has(const std::string& message, const char* part) { return message.find(part) != std::string::npos; }

}  // namespace

int main() {
  using namespace fastmask;

  const std::string pending = pending_error_message("nms", cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument");
  expect(has(pending, "fastmask.nms: a CUDA error from earlier work") && has(pending, "cudaErrorInvalidValue") &&
             has(pending, "has been cleared") && !has(pending, "restart"),
         "a pending launch error is reported as earlier work's, and as cleared", pending);

  const std::string pending_fault =
      pending_error_message("nms", cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access");
  expect(has(pending_fault, "earlier work") && has(pending_fault, "restart the process") &&
             !has(pending_fault, "has been cleared"),
         "a pending device fault says the context is unusable (it cannot be cleared)", pending_fault);

  const std::string fault = launch_error_message("nms", "nms write_kept_kernel", cudaErrorIllegalAddress,
                                                 "cudaErrorIllegalAddress", "an illegal memory access");
  expect(has(fault, "faulted on the device") && has(fault, "seen when launching nms write_kept_kernel") &&
             has(fault, "earlier kernel of this op") && !has(fault, "failed to launch"),
         "a fault seen at the second launch is a fault, not that kernel's launch failure", fault);

  const std::string launch = launch_error_message("roi_align", "roi_align forward_kernel", cudaErrorInvalidConfiguration,
                                                  "cudaErrorInvalidConfiguration", "invalid configuration argument");
  expect(has(launch, "fastmask.roi_align: CUDA kernel roi_align forward_kernel failed to launch") &&
             !has(launch, "faulted"),
         "a launch error names the kernel that failed to launch", launch);

  const std::string arch = launch_error_message("paste_masks_in_image", "paste_kernel", cudaErrorNoKernelImageForDevice,
                                                "cudaErrorNoKernelImageForDevice", "no kernel image");
  expect(has(arch, "failed to launch") && has(arch, "TORCH_CUDA_ARCH_LIST"),
         "a missing architecture says how to get kernels for it", arch);

  for (const cudaError_t e : {cudaErrorIllegalAddress, cudaErrorLaunchFailure, cudaErrorAssert,
                              cudaErrorMisalignedAddress, cudaErrorIllegalInstruction})
    expect(is_device_fault(e), "device fault " + std::to_string(static_cast<int>(e)), "");
  for (const cudaError_t e : {cudaErrorInvalidValue, cudaErrorInvalidConfiguration, cudaErrorLaunchOutOfResources,
                              cudaErrorNoKernelImageForDevice, cudaErrorMemoryAllocation})
    expect(!is_device_fault(e), "not a device fault " + std::to_string(static_cast<int>(e)), "");

  std::printf(failures ? "%d failure(s)\n" : "cuda_errors: all checks passed\n", failures);
  return failures ? 1 : 0;
}
