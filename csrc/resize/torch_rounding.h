// How the running torch's CPU bilinear kernels round (common/linear_interp.h): which
// multiply-adds they fuse depends on the CPU capability ATen dispatches to (ATEN_CPU_CAPABILITY)
// and on the torch release, so it is measured, not assumed.
#pragma once

#include "resize_cpu.h"

namespace fastmask {

// Found once per process: upsample_bilinear2d (through the dispatcher) on two probes, one per
// kernel, compared with fastmask's resize under each rounding.
const TorchBilinearRounding& torch_bilinear_rounding();

}  // namespace fastmask
