// How the running torch's CPU bilinear kernels round (common/linear_interp.h): which
// multiply-adds they fuse depends on the CPU capability ATen dispatches to (ATEN_CPU_CAPABILITY)
// and on the torch release, so it is measured, not assumed.
#pragma once

#include "resize_cpu.h"

namespace fastmask {

// For float64 or float32 kernels (float16 and bfloat16: float32's, in which they compute). Found
// once per process: upsample_bilinear2d (through the dispatcher) on probes, one per kernel and
// type, compared with fastmask's resize under each rounding (torch 2.15 rounds float32's
// separable kernel otherwise than float64's).
const TorchBilinearRounding& torch_bilinear_rounding(ScalarKind dtype);

}  // namespace fastmask
