// CUDA registration of the resize ops: current stream, and a check of every launch.
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_launch.h"
#include "resize_cuda.h"
#include "resize_registration.h"

namespace fastmask {
namespace {

void run(const ResizeParams* jobs, int64_t count) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t i = 0; i < count; ++i)
    run_cuda_launcher("resize_bilinear", [&] { return resize_bilinear_cuda(jobs[i], stream); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { ResizeOps<run>::register_impls(m); }

}  // namespace fastmask
