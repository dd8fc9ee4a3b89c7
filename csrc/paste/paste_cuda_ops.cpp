// CUDA registration of the paste op: current stream, and a check of every launch.
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_launch.h"
#include "paste_cuda.h"
#include "paste_registration.h"

namespace fastmask {
namespace {

void run(const PasteParams& p) {
  run_cuda_launcher("paste_masks_in_image", [&] { return paste_masks_cuda(p, c10::cuda::getCurrentCUDAStream()); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { PasteOps<run>::register_impls(m); }

}  // namespace fastmask
