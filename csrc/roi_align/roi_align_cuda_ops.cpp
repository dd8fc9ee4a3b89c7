// CUDA registration of the RoIAlign ops: every launch on the current stream, and checked.
#include "common/cuda_launch.h"
#include "roi_align_cuda.h"
#include "roi_align_registration.h"

namespace fastmask {
namespace {

void forward(const RoIAlignParams& p) {
  run_cuda_launcher("roi_align", [&](cudaStream_t stream) { return roi_align_forward_cuda(p, stream); });
}

void backward(const RoIAlignParams& p) {
  run_cuda_launcher("roi_align_backward", [&](cudaStream_t stream) { return roi_align_backward_cuda(p, false, stream); });
}

void backward_deterministic(const RoIAlignParams& p) {
  run_cuda_launcher("roi_align_backward", [&](cudaStream_t stream) { return roi_align_backward_cuda(p, true, stream); });
}

RoIAlignBackend cuda_backend(bool deterministic) {
  RoIAlignBackend b;
  b.forward = forward;
  b.backward = deterministic ? backward_deterministic : backward;
  b.check_indices = false;
  // The deterministic kernel's threads own channels (it accumulates channels_last), and its
  // blocks walk the RoIs of one (level, image) each.
  b.channels_last_gradient = deterministic;
  b.bucket_rois = deterministic;
  return b;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { RoIAlignOps<cuda_backend>::register_impls(m); }

}  // namespace fastmask
