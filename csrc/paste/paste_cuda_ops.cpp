// CUDA registration of the paste op: the launch on the current stream, and checked.
#include "common/cuda_launch.h"
#include "paste_cuda.h"
#include "paste_registration.h"

namespace fastmask {
namespace {

void run(const PasteParams& p) {
  run_cuda_launcher("paste_masks_in_image", [&](cudaStream_t stream) { return paste_masks_cuda(p, stream); });
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { PasteOps<run>::register_impls(m); }

}  // namespace fastmask
