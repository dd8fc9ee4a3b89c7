// CUDA registration of the resize ops: every launch on the current stream, and checked.
#include "common/cuda_launch.h"
#include "resize_cuda.h"
#include "resize_registration.h"

namespace fastmask {
namespace {

void run(const ResizeParams* jobs, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    run_cuda_launcher("resize_bilinear", [&](cudaStream_t stream) { return resize_bilinear_cuda(jobs[i], stream); });
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { ResizeOps<run>::register_impls(m); }

}  // namespace fastmask
