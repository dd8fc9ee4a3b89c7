// Mask pasting on CUDA, all masks in one launch: a block per output row of a
// mask (mask x image row), its threads along the row. Every output element is
// written once: zeros outside the mask's box, else the bilinear sample of the
// padded mask (read from global memory; a 28 x 28 mask stays in cache).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "common/device_scalar.cuh"
#include "paste_cuda.h"
#include "paste_geometry.h"

namespace fastmask {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;

template <typename T, typename A>
__device__ __forceinline__ A padded_value(const T* mask, const PasteParams& p, int64_t i, int64_t j) {
  i -= p.padding, j -= p.padding;
  const bool inside = i >= 0 && i < p.mask_height && j >= 0 && j < p.mask_width;
  return inside ? static_cast<A>(DeviceScalar<T>::load(mask[i * p.mask_width + j])) : A(0);
}

template <typename T, typename A, bool kBinary>
__global__ void paste_kernel(const PasteParams p) {
  using Out = std::conditional_t<kBinary, bool, T>;
  const int64_t ph = p.mask_height + 2 * p.padding, pw = p.mask_width + 2 * p.padding;
  // As `pasted > threshold` on a tensor: the Python scalar is first rounded to the masks' dtype.
  const A threshold = DeviceArith<T>::round(static_cast<A>(p.threshold));
  const int64_t rows = p.num_masks * p.height;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t n = r / p.height, y = r % p.height;
    const PasteBox<A> box = paste_box<A>(p, n);
    const bool row_inside = y >= box.row_begin && y < box.row_end;
    const LinearTap<A> ty = linear_tap<A>(row_inside ? y - box.y0 : 0, ph, box.box_h, box.step_h);
    const T* mask = static_cast<const T*>(p.masks) + n * p.mask_height * p.mask_width;
    Out* out = static_cast<Out*>(p.out) + r * p.width;
    for (int64_t x = threadIdx.x; x < p.width; x += blockDim.x) {
      A v = A(0);
      if (row_inside && x >= box.col_begin && x < box.col_end) {
        const LinearTap<A> tx = linear_tap<A>(x - box.x0, pw, box.box_w, box.step_w);
        const A r0 = blend(padded_value<T, A>(mask, p, ty.i0, tx.i0), tx.w0,
                           padded_value<T, A>(mask, p, ty.i0, tx.i1), tx.w1);
        const A r1 = blend(padded_value<T, A>(mask, p, ty.i1, tx.i0), tx.w0,
                           padded_value<T, A>(mask, p, ty.i1, tx.i1), tx.w1);
        v = blend(r0, ty.w0, r1, ty.w1);
      }
      if constexpr (kBinary)
        out[x] = DeviceArith<T>::round(v) > threshold;
      else
        out[x] = DeviceScalar<T>::store(v);
    }
  }
}

template <typename T, typename A>
LaunchStatus launch(const PasteParams& p, cudaStream_t stream) {
  const int64_t rows = p.num_masks * p.height;
  if (rows == 0) return {};
  const unsigned blocks = static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks);
  if (p.binary)
    paste_kernel<T, A, true><<<blocks, kThreads, 0, stream>>>(p);
  else
    paste_kernel<T, A, false><<<blocks, kThreads, 0, stream>>>(p);
  FASTMASK_RETURN_IF_LAUNCH_FAILED("paste_kernel");
  return {};
}

}  // namespace

LaunchStatus paste_masks_cuda(const PasteParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return launch<float, float>(p, stream);
    case ScalarKind::kFloat64: return launch<double, double>(p, stream);
    case ScalarKind::kFloat16: return launch<__half, float>(p, stream);
    case ScalarKind::kBFloat16: return launch<__nv_bfloat16, float>(p, stream);
  }
  return {cudaErrorInvalidValue, "paste_kernel (unknown dtype)"};
}

}  // namespace fastmask
