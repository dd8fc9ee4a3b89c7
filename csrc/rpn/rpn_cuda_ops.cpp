// CUDA registration of the RPN ops: every launch on the current stream, and checked.
#include "common/cuda_launch.h"
#include "nms/nms_cuda.h"
#include "rpn_cuda.h"
#include "rpn_registration.h"

namespace fastmask {
namespace {

void anchors(const AnchorParams& p) {
  run_cuda_launcher("grid_anchors", [&](cudaStream_t stream) { return grid_anchors_cuda(p, stream); });
}
void decode(const BoxCodingParams& p) {
  run_cuda_launcher("decode_boxes", [&](cudaStream_t stream) { return decode_boxes_cuda(p, stream); });
}
void encode(const BoxCodingParams& p) {
  run_cuda_launcher("encode_boxes", [&](cudaStream_t stream) { return encode_boxes_cuda(p, stream); });
}
void propose(const ProposalParams& p) {
  run_cuda_launcher("generate_proposals", [&](cudaStream_t stream) { return propose_cuda(p, stream); });
}

RpnBackend cuda_backend() { return {anchors, decode, encode, propose, multi_image_nms_cuda_run}; }

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { RpnOps<cuda_backend>::register_impls(m); }

}  // namespace fastmask
