// Whether PyTorch's CPU kernels fuse multiply-adds, for the kernels that follow
// their arithmetic (common/linear_interp.h).
#pragma once

#include <ATen/Version.h>

namespace fastmask {

// Its AVX2 and AVX-512 builds do (the compiler contracts a * b + c), its DEFAULT
// build does not (x86-64; elsewhere the compiler always fuses). The capability
// is fixed for the process (ATEN_CPU_CAPABILITY is read once).
inline bool torch_kernels_fused() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool fused = at::get_cpu_capability() != "DEFAULT";
  return fused;
#else
  return true;
#endif
}

}  // namespace fastmask
