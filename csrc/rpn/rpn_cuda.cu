// CUDA kernels of the RPN ops: each op of rpn_math.h over its elements, one
// thread per element in a grid-stride loop. exp and log are CUDA's expf/logf,
// which torch.exp/log run on CUDA too. Params structs are passed by value (they
// fit the parameter space).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/device_scalar.cuh"
#include "rpn_cuda.h"
#include "rpn_math.h"

namespace fastmask {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

// A Python scalar divisor is applied as ATen's CUDA kernels do: multiplied by its reciprocal.
template <typename T>
struct RpnArith : DeviceArith<T> {
  using V = typename DeviceArith<T>::V;
  static __device__ __forceinline__ V exp(V v) { return ::exp(v); }
  static __device__ __forceinline__ V log(V v) { return ::log(v); }
  static __device__ __forceinline__ V div_scalar(V v, double s) {
    return DeviceArith<T>::round(v * (V(1) / static_cast<V>(s)));
  }
};

// CUDA's expf/logf are torch.exp/log's on CUDA: the kernels compute them inline.
template <typename A>
using DecodeInline = rpn::DecodeOp<A, rpn::Pass::kInline>;
template <typename A>
using EncodeInline = rpn::EncodeOp<A, rpn::Pass::kInline>;
template <typename A>
using ProposeInline = rpn::ProposeOp<A, rpn::Pass::kInline>;

template <typename Op, typename Params>
__global__ void for_each_kernel(const Params p) {
  const int64_t n = Op::size(p);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    Op::apply(p, i);
}

template <template <typename> class Op, typename Params>
LaunchStatus for_each(const Params& p, cudaStream_t stream, const char* kernel) {
  const int64_t n = Op<RpnArith<float>>::size(p);
  if (n == 0) return {};
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
  switch (p.dtype) {
    case ScalarKind::kFloat32: for_each_kernel<Op<RpnArith<float>>><<<blocks, kThreads, 0, stream>>>(p); break;
    case ScalarKind::kFloat64: for_each_kernel<Op<RpnArith<double>>><<<blocks, kThreads, 0, stream>>>(p); break;
    case ScalarKind::kFloat16: for_each_kernel<Op<RpnArith<__half>>><<<blocks, kThreads, 0, stream>>>(p); break;
    case ScalarKind::kBFloat16:
      for_each_kernel<Op<RpnArith<__nv_bfloat16>>><<<blocks, kThreads, 0, stream>>>(p);
      break;
  }
  FASTMASK_RETURN_IF_LAUNCH_FAILED(kernel);
  return {};
}

}  // namespace

LaunchStatus grid_anchors_cuda(const AnchorParams& p, cudaStream_t s) {
  return for_each<rpn::AnchorOp>(p, s, "anchor_kernel");
}
LaunchStatus decode_boxes_cuda(const BoxCodingParams& p, cudaStream_t s) {
  return for_each<DecodeInline>(p, s, "decode_kernel");
}
LaunchStatus encode_boxes_cuda(const BoxCodingParams& p, cudaStream_t s) {
  return for_each<EncodeInline>(p, s, "encode_kernel");
}
LaunchStatus propose_cuda(const ProposalParams& p, cudaStream_t s) {
  return for_each<ProposeInline>(p, s, "proposal_candidate_kernel");
}

}  // namespace fastmask
