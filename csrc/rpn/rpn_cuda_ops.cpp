// CUDA registration of the RPN ops: current stream and a check of every launch.
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_launch.h"
#include "nms/nms_cuda.h"
#include "rpn_cuda.h"
#include "rpn_registration.h"

namespace fastmask {
namespace {

void anchors(const AnchorParams& p) {
  check_cuda_launch(grid_anchors_cuda(p, c10::cuda::getCurrentCUDAStream()), "grid_anchors");
}
void decode(const BoxCodingParams& p) {
  check_cuda_launch(decode_boxes_cuda(p, c10::cuda::getCurrentCUDAStream()), "decode_boxes");
}
void encode(const BoxCodingParams& p) {
  check_cuda_launch(encode_boxes_cuda(p, c10::cuda::getCurrentCUDAStream()), "encode_boxes");
}
void propose(const ProposalParams& p) {
  check_cuda_launch(propose_cuda(p, c10::cuda::getCurrentCUDAStream()), "generate_proposals");
}

RpnBackend cuda_backend() { return {anchors, decode, encode, propose, multi_image_nms_cuda_run}; }

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { RpnOps<cuda_backend>::register_impls(m); }

}  // namespace fastmask
