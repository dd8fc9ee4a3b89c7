// CUDA registration of the paste op: current stream, and a check of every launch.
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_launch.h"
#include "paste_cuda.h"
#include "paste_registration.h"

namespace fastmask {
namespace {

void run(const PasteParams& p) {
  check_cuda_launch(paste_masks_cuda(p, c10::cuda::getCurrentCUDAStream()), "paste_masks_in_image");
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { PasteOps<run>::register_impls(m); }

}  // namespace fastmask
