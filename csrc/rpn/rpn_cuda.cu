// CUDA kernels of the RPN ops: one thread per element (anchor, box or
// candidate), grid-stride loops; the arithmetic is rpn_math.h's, so results
// equal the CPU kernels' except where CUDA's expf/logf and the C library's
// differ. Params structs are passed by value (they fit the parameter space).
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

// Arithmetic of storage type T_ on the device. A Python scalar divisor is
// applied as ATen's CUDA kernels do: multiplied by its reciprocal.
template <typename T_>
struct DeviceArith {
  using T = T_;
  using V = typename DeviceScalar<T>::Acc;
  static __device__ __forceinline__ V load(T v) { return DeviceScalar<T>::load(v); }
  static __device__ __forceinline__ T store(V v) { return DeviceScalar<T>::store(v); }
  static __device__ __forceinline__ V round(V v) { return load(store(v)); }
  static __device__ __forceinline__ V exp(V v) { return ::exp(v); }
  static __device__ __forceinline__ V log(V v) { return ::log(v); }
  static __device__ __forceinline__ V div_scalar(V v, double s) { return round(v * (V(1) / static_cast<V>(s))); }
};

unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

#define FASTMASK_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <typename A>
__global__ void anchors_kernel(const AnchorParams p) {
  const int64_t total = p.level_start[p.num_levels];
  FASTMASK_GRID_STRIDE(i, p.num_images * total) { rpn::write_anchor<A>(p, i / total, i % total); }
}

template <typename A>
__global__ void decode_kernel(const BoxCodingParams p) {
  FASTMASK_GRID_STRIDE(i, p.num_boxes * p.classes) { rpn::decode_one<A>(p, i / p.classes, i % p.classes); }
}

template <typename A>
__global__ void encode_kernel(const BoxCodingParams p) {
  FASTMASK_GRID_STRIDE(i, p.num_boxes) { rpn::encode_one<A>(p, i); }
}

template <typename A>
__global__ void propose_kernel(const ProposalParams p) {
  const int64_t K = p.level_start[p.num_levels];
  FASTMASK_GRID_STRIDE(i, p.num_images * K) { rpn::propose_one<A>(p, i / K, i % K); }
}

#undef FASTMASK_GRID_STRIDE

template <template <typename> class Kernel, typename Params>
cudaError_t launch(const Params& p, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = blocks_for(n);
  switch (p.dtype) {
    case ScalarKind::kFloat32: Kernel<DeviceArith<float>>::launch(p, blocks, stream); break;
    case ScalarKind::kFloat64: Kernel<DeviceArith<double>>::launch(p, blocks, stream); break;
    case ScalarKind::kFloat16: Kernel<DeviceArith<__half>>::launch(p, blocks, stream); break;
    case ScalarKind::kBFloat16: Kernel<DeviceArith<__nv_bfloat16>>::launch(p, blocks, stream); break;
  }
  return cudaGetLastError();
}

template <typename A>
struct Anchors {
  static void launch(const AnchorParams& p, unsigned blocks, cudaStream_t s) {
    anchors_kernel<A><<<blocks, kThreads, 0, s>>>(p);
  }
};
template <typename A>
struct Decode {
  static void launch(const BoxCodingParams& p, unsigned blocks, cudaStream_t s) {
    decode_kernel<A><<<blocks, kThreads, 0, s>>>(p);
  }
};
template <typename A>
struct Encode {
  static void launch(const BoxCodingParams& p, unsigned blocks, cudaStream_t s) {
    encode_kernel<A><<<blocks, kThreads, 0, s>>>(p);
  }
};
template <typename A>
struct Propose {
  static void launch(const ProposalParams& p, unsigned blocks, cudaStream_t s) {
    propose_kernel<A><<<blocks, kThreads, 0, s>>>(p);
  }
};

}  // namespace

cudaError_t grid_anchors_cuda(const AnchorParams& p, cudaStream_t stream) {
  return launch<Anchors>(p, p.num_images * p.level_start[p.num_levels], stream);
}
cudaError_t decode_boxes_cuda(const BoxCodingParams& p, cudaStream_t stream) {
  return launch<Decode>(p, p.num_boxes * p.classes, stream);
}
cudaError_t encode_boxes_cuda(const BoxCodingParams& p, cudaStream_t stream) {
  return launch<Encode>(p, p.num_boxes, stream);
}
cudaError_t propose_cuda(const ProposalParams& p, cudaStream_t stream) {
  return launch<Propose>(p, p.num_images * p.level_start[p.num_levels], stream);
}

}  // namespace fastmask
