// CUDA registration of the RPN ops: current stream and a check of every launch.
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_launch.h"
#include "nms/nms_cuda.h"
#include "rpn_cuda.h"
#include "rpn_registration.h"

namespace fastmask {
namespace {

void anchors(const AnchorParams& p) {
  run_cuda_launcher("grid_anchors", [&] { return grid_anchors_cuda(p, c10::cuda::getCurrentCUDAStream()); });
}
void decode(const BoxCodingParams& p) {
  run_cuda_launcher("decode_boxes", [&] { return decode_boxes_cuda(p, c10::cuda::getCurrentCUDAStream()); });
}
void encode(const BoxCodingParams& p) {
  run_cuda_launcher("encode_boxes", [&] { return encode_boxes_cuda(p, c10::cuda::getCurrentCUDAStream()); });
}
void propose(const ProposalParams& p) {
  run_cuda_launcher("generate_proposals", [&] { return propose_cuda(p, c10::cuda::getCurrentCUDAStream()); });
}

RpnBackend cuda_backend() { return {anchors, decode, encode, propose, multi_image_nms_cuda_run}; }

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { RpnOps<cuda_backend>::register_impls(m); }

}  // namespace fastmask
