// Multi-image NMS on CUDA, all on the device (no host synchronisation):
//  1. overlap mask: for every image (grid z) and pair of 64-box blocks in score
//     order, a 64-bit word per box of the row block saying which later boxes of
//     the column block it suppresses (IoU > threshold, same class, both valid);
//  2. reduction: one thread block per image walks the boxes in score order 64 at
//     a time. One thread settles the 64 boxes of the current word (sequential,
//     as greedy NMS is), then all threads OR the rows of the boxes it kept into
//     the words still ahead. torchvision copies the mask to the host for this.
// The IoU is torchvision's CPU expression in the box dtype (built with
// -fmad=false), so results equal the CPU kernel's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/device_scalar.cuh"
#include "nms_cuda.h"

namespace fastmask {
namespace {

constexpr int kWord = 64;
constexpr int kReduceThreads = 256;

template <typename T>
__device__ __forceinline__ bool iou_exceeds(const typename DeviceArith<T>::V* a, const typename DeviceArith<T>::V* b,
                                            double threshold) {
  using A = DeviceArith<T>;
  using V = typename A::V;
  const V zero = 0;
  const V area_a = A::round(A::round(a[2] - a[0]) * A::round(a[3] - a[1]));
  const V area_b = A::round(A::round(b[2] - b[0]) * A::round(b[3] - b[1]));
  const V xx1 = a[0] < b[0] ? b[0] : a[0];
  const V yy1 = a[1] < b[1] ? b[1] : a[1];
  const V xx2 = b[2] < a[2] ? b[2] : a[2];
  const V yy2 = b[3] < a[3] ? b[3] : a[3];
  const V dw = A::round(xx2 - xx1), dh = A::round(yy2 - yy1);
  const V w = zero < dw ? dw : zero;
  const V h = zero < dh ? dh : zero;
  const V inter = A::round(w * h);
  const V ovr = A::round(inter / A::round(A::round(area_a + area_b) - inter));
  return static_cast<double>(ovr) > threshold;
}

template <typename T>
__global__ void overlap_mask_kernel(const NmsParams p, int64_t words, int64_t first_image,
                                    unsigned long long* mask) {
  using A = DeviceArith<T>;
  using V = typename A::V;
  const int64_t image = first_image + blockIdx.z;
  const int64_t row_block = blockIdx.y, col_block = blockIdx.x;
  if (col_block < row_block) return;  // only later boxes are ever suppressed
  const int64_t N = p.num_boxes;
  const int64_t col_start = col_block * kWord;
  const int cols = static_cast<int>(N - col_start < kWord ? N - col_start : kWord);
  const T* boxes = static_cast<const T*>(p.boxes) + image * N * 4;

  __shared__ V col_boxes[kWord][4];
  __shared__ int64_t col_class[kWord];
  __shared__ bool col_valid[kWord];
  if (threadIdx.x < cols) {
    const int64_t j = col_start + threadIdx.x;
    for (int k = 0; k < 4; ++k) col_boxes[threadIdx.x][k] = A::load(boxes[j * 4 + k]);
    col_class[threadIdx.x] = p.classes ? p.classes[image * N + j] : 0;
    col_valid[threadIdx.x] = p.valid ? p.valid[image * N + j] : true;
  }
  __syncthreads();

  const int64_t i = row_block * kWord + threadIdx.x;
  if (i >= N) return;
  V row_box[4];
  for (int k = 0; k < 4; ++k) row_box[k] = A::load(boxes[i * 4 + k]);
  const int64_t row_class = p.classes ? p.classes[image * N + i] : 0;
  const bool row_valid = p.valid ? p.valid[image * N + i] : true;
  unsigned long long bits = 0;
  if (row_valid) {
    const int first = col_block == row_block ? static_cast<int>(threadIdx.x) + 1 : 0;
    for (int c = first; c < cols; ++c) {
      if (col_valid[c] && col_class[c] == row_class && iou_exceeds<T>(row_box, col_boxes[c], p.iou_threshold))
        bits |= 1ULL << c;
    }
  }
  mask[(image * N + i) * words + col_block] = bits;
}

__global__ void reduce_kernel(const NmsParams p, int64_t words, const unsigned long long* mask,
                              unsigned long long* removed_all) {
  const int64_t image = blockIdx.x;
  const int64_t N = p.num_boxes, M = p.max_output;
  const unsigned long long* rows = mask + image * N * words;
  unsigned long long* removed = removed_all + image * words;
  int64_t* keep = p.keep + image * M;
  const int64_t* order = p.order + image * N;
  const bool* valid = p.valid ? p.valid + image * N : nullptr;

  __shared__ unsigned long long kept_bits;
  __shared__ unsigned long long diagonal[kWord];  // mask words of the current 64 boxes among themselves
  __shared__ bool usable[kWord];                  // valid and in range
  __shared__ int64_t count;
  __shared__ bool full;
  if (threadIdx.x == 0) count = 0, full = false;
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) removed[w] = 0;
  __syncthreads();

  for (int64_t word = 0; word < words; ++word) {
    if (threadIdx.x < kWord) {  // one coalesced load instead of dependent loads in the serial part
      const int64_t i = word * kWord + threadIdx.x;
      usable[threadIdx.x] = i < N && (!valid || valid[i]);
      diagonal[threadIdx.x] = i < N ? rows[i * words + word] : 0;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long rem = removed[word], kept = 0;
      for (int bit = 0; bit < kWord; ++bit) {
        if (((rem >> bit) & 1ULL) || !usable[bit]) continue;
        keep[count++] = order[word * kWord + bit];
        kept |= 1ULL << bit;
        rem |= diagonal[bit];
        if (count == M) {
          full = true;
          break;
        }
      }
      kept_bits = kept;
    }
    __syncthreads();
    if (full) break;
    const unsigned long long kept = kept_bits;
    for (int64_t w = word + 1 + threadIdx.x; w < words; w += blockDim.x) {
      unsigned long long acc = removed[w];
      for (unsigned long long k = kept; k; k &= k - 1) acc |= rows[(word * kWord + __ffsll(k) - 1) * words + w];
      removed[w] = acc;
    }
    __syncthreads();
  }
  for (int64_t m = count + threadIdx.x; m < M; m += blockDim.x) keep[m] = -1;
  if (threadIdx.x == 0) p.counts[image] = count;
}

template <typename T>
LaunchStatus launch(const NmsParams& p, void* mask, void* removed, cudaStream_t stream) {
  const int64_t words = nms_mask_words(p.num_boxes);
  auto* m = static_cast<unsigned long long*>(mask);
  // grid z (images) is limited to 65535 per launch.
  constexpr int64_t kMaxGridZ = 65535;
  for (int64_t first = 0; first < p.num_images; first += kMaxGridZ) {
    const int64_t images = p.num_images - first < kMaxGridZ ? p.num_images - first : kMaxGridZ;
    const dim3 grid(static_cast<unsigned>(words), static_cast<unsigned>(words), static_cast<unsigned>(images));
    overlap_mask_kernel<T><<<grid, kWord, 0, stream>>>(p, words, first, m);
    FASTMASK_RETURN_IF_LAUNCH_FAILED("nms overlap_mask_kernel");
  }
  reduce_kernel<<<static_cast<unsigned>(p.num_images), kReduceThreads, 0, stream>>>(
      p, words, m, static_cast<unsigned long long*>(removed));
  FASTMASK_RETURN_IF_LAUNCH_FAILED("nms reduce_kernel");
  return {};
}

}  // namespace

int64_t nms_mask_words(int64_t num_boxes) { return (num_boxes + kWord - 1) / kWord; }

LaunchStatus multi_image_nms_cuda(const NmsParams& p, void* mask, void* removed, cudaStream_t stream) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return launch<float>(p, mask, removed, stream);
    case ScalarKind::kFloat64: return launch<double>(p, mask, removed, stream);
    case ScalarKind::kFloat16: return launch<__half>(p, mask, removed, stream);
    case ScalarKind::kBFloat16: return launch<__nv_bfloat16>(p, mask, removed, stream);
  }
  return {cudaErrorInvalidValue, "nms (unknown dtype)"};
}

}  // namespace fastmask
