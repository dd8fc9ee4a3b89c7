// Multi-image NMS on CUDA, all on the device (no host synchronisation: it can
// be captured in a CUDA graph). The binding (nms_cuda_ops.cpp) has grouped each
// image's valid candidates by class, in score order within a class, and cut
// every group into tiles of at most kNmsTile candidates. Nothing pairwise is
// stored: memory is O(B N).
//
//  1. greedy_kernel: persistent blocks take the tiles, in (image, slot) order,
//     from a ticket counter. A tile first drops its candidates suppressed by
//     the boxes kept by the earlier tiles of its group, taking each of those
//     once it is settled (a look-back as in CUB's decoupled scans: a ticket is
//     only held by a running block, which only waits on smaller tickets, so
//     this cannot deadlock). Then greedy NMS on what is left, 64 candidates at
//     a time: their 64x64 overlap bits, settled serially by one thread, then
//     the word's kept boxes against every later alive candidate, the survivors
//     compacted (suppressed candidates are never tested again). The tile then
//     publishes its kept ranks and count, and flags them in a per-image bitmask.
//     A group stops at max_output kept boxes (later ones cannot be written).
//  2. write_kept_kernel: per image, the flagged ranks in score order (that is,
//     across classes) -> keep, at most max_output, -1 padded, and counts.
//
// Work per group of n candidates: at most 32 n IoU tests for the words' overlap
// bits (64 x 64 / 2 per word), plus, per word, its kept boxes x the candidates
// still alive after it (suppressed candidates are never tested again), as
// nms_cpu.cpp; nothing across groups, images or invalid candidates. Groups run
// in parallel, and so do the tiles of a large group, except that a tile settles
// after its predecessor: a chain of n / kNmsTile links of at most kNmsTile^2
// tests each, on one block. (torchvision tests all N^2 / 2 pairs of an image
// and walks the N^2 / 64-word mask on the host.)
// The IoU is torchvision's CPU expression in the box dtype (built with
// -fmad=false), compared in that type with the host-converted threshold
// (nms_threshold.h), so results equal the CPU kernel's.
#include <cuda/atomic>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/device_scalar.cuh"
#include "nms_cuda.h"
#include "nms_threshold.h"

namespace fastmask {
namespace {

constexpr int kWord = 64;
constexpr int kThreads = kNmsTile;
constexpr int kWarps = kThreads / 32;
constexpr int kRowThreads = kThreads / kWord;      // threads per row of a word's overlap bits
constexpr int kRowColumns = kWord / kRowThreads;  // columns per thread
static_assert(kThreads % 32 == 0 && kThreads >= kWord && kThreads % kWord == 0, "block of whole warps, >= a word");
static_assert(32 % kRowThreads == 0, "a row's threads lie in one warp");

template <typename V>
struct Box {
  V x1, y1, x2, y2, area;
};

template <typename T>
__device__ __forceinline__ Box<typename DeviceArith<T>::V> load_box(const T* b) {
  using A = DeviceArith<T>;
  Box<typename A::V> box{A::load(b[0]), A::load(b[1]), A::load(b[2]), A::load(b[3]), 0};
  box.area = A::round(A::round(box.x2 - box.x1) * A::round(box.y2 - box.y1));  // torchvision's area, in T
  return box;
}

// Whether the kept box `a` suppresses the candidate `b`: torchvision's IoU
// expression operand for operand (so NaN coordinates behave as on the CPU),
// every result rounded to T, compared with `threshold` (threshold_in).
template <typename T>
__device__ __forceinline__ bool suppresses(const Box<typename DeviceArith<T>::V>& a,
                                           const Box<typename DeviceArith<T>::V>& b,
                                           typename DeviceArith<T>::V threshold, bool zero_exceeds) {
  using A = DeviceArith<T>;
  using V = typename A::V;
  const V zero = 0;
  const V xx1 = a.x1 < b.x1 ? b.x1 : a.x1;
  const V yy1 = a.y1 < b.y1 ? b.y1 : a.y1;
  const V xx2 = b.x2 < a.x2 ? b.x2 : a.x2;
  const V yy2 = b.y2 < a.y2 ? b.y2 : a.y2;
  const V dw = A::round(xx2 - xx1), dh = A::round(yy2 - yy1);
  const V w = zero < dw ? dw : zero;
  const V h = zero < dh ? dh : zero;
  const V inter = A::round(w * h);
  // No overlap (or NaN): the IoU is +-0 or NaN, which exceeds only a negative threshold.
  if (!(inter > zero) && !zero_exceeds) return false;
  const V ovr = A::round(inter / A::round(A::round(a.area + b.area) - inter));
  return ovr > threshold;
}

// Exclusive prefix sum of `value` over the block's threads, in thread order;
// `total` gets the sum. Every thread calls it; it synchronises the block.
__device__ __forceinline__ int block_exclusive_sum(int value, int& total, int* warp_totals) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int inclusive = value;
  for (int d = 1; d < 32; d <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, inclusive, d);
    if (lane >= d) inclusive += v;
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  int before = 0;
  total = 0;
  for (int w = 0; w < kWarps; ++w) {
    const int t = warp_totals[w];
    if (w < warp) before += t;
    total += t;
  }
  __syncthreads();  // warp_totals free for the next call
  return before + inclusive - value;
}

// Drops the alive candidates in [from, n) that one of the k staged kept boxes
// suppresses, keeping the others in order; returns the new alive count.
// Thread j tests candidate j.
template <typename T>
__device__ int sweep_and_compact(Box<typename DeviceArith<T>::V>* alive, int* alive_rank, int from, int n,
                                 const Box<typename DeviceArith<T>::V>* staged, int k,
                                 typename DeviceArith<T>::V threshold, bool zero_exceeds, int* warp_totals) {
  const int j = threadIdx.x;
  Box<typename DeviceArith<T>::V> box{};
  int rank = 0;
  bool survives = false;
  if (j >= from && j < n) {
    box = alive[j];
    rank = alive_rank[j];
    survives = true;
    for (int i = 0; i < k && survives; ++i) survives = !suppresses<T>(staged[i], box, threshold, zero_exceeds);
  }
  int total;
  const int slot = from + block_exclusive_sum(survives ? 1 : 0, total, warp_totals);
  // block_exclusive_sum synchronised: every candidate has been read before any moves.
  if (survives) alive[slot] = box, alive_rank[slot] = rank;
  __syncthreads();
  return from + total;
}

// Thread 0: the kept count of a tile once its block has settled it.
__device__ __forceinline__ int wait_settled(int32_t* status) {
  cuda::atomic_ref<int32_t, cuda::thread_scope_device> flag(*status);
  int32_t settled;
  while ((settled = flag.load(cuda::memory_order_acquire)) == 0) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 700
    __nanosleep(64);
#endif
  }
  __threadfence();  // as cooperative groups' grid sync: the block reads what that tile wrote after this
  return settled - 1;
}

// Resident blocks per SM the greedy kernel's registers must allow: 6 of the 8 its 256 threads
// could fill for float, half and bf16 (ptxas, CUDA 13.0, sm_90: 39-40 registers with the bound,
// 44 without, which would allow 5), 4 for double (62 registers). The bound keeps a change to the
// kernel from silently costing a block per SM.
template <typename T>
constexpr int kGreedyBlocksPerSM = sizeof(T) == 8 ? 4 : 6;

template <typename T>
__global__ void __launch_bounds__(kThreads, kGreedyBlocksPerSM<T>) greedy_kernel(const NmsParams p, const NmsCudaGroups g,
                                                          typename DeviceArith<T>::V threshold, bool zero_exceeds) {
  using V = typename DeviceArith<T>::V;
  __shared__ Box<V> alive[kNmsTile];  // the tile's alive candidates, in score order
  __shared__ int alive_rank[kNmsTile];
  __shared__ Box<V> staged[kNmsTile];  // kept boxes the alive candidates are tested against
  __shared__ unsigned long long overlap[kWord];  // bit j of row i: candidate i of the word suppresses j
  __shared__ int warp_totals[kWarps];
  __shared__ int64_t shared_ticket;
  __shared__ int shared_count;
  __shared__ unsigned long long shared_kept;

  const int64_t N = p.num_boxes, M = p.max_output, words = (N + kWord - 1) / kWord;
  const int64_t num_tiles = *g.num_tiles;
  const int tid = threadIdx.x;
  cuda::atomic_ref<unsigned long long, cuda::thread_scope_device> next_ticket(*g.next_ticket);

  for (;;) {
    if (tid == 0) shared_ticket = static_cast<int64_t>(next_ticket.fetch_add(1, cuda::memory_order_relaxed));
    __syncthreads();
    const int64_t ticket = shared_ticket;
    if (ticket >= num_tiles) return;

    const int64_t first_slot = g.tiles[ticket] >> 1;
    const int64_t image = first_slot / N;
    const int begin = static_cast<int>(first_slot - image * N);
    int end = static_cast<int>(g.num_valid[image]);
    if (ticket + 1 < num_tiles && (g.tiles[ticket + 1] >> 1) / N == image)
      end = static_cast<int>((g.tiles[ticket + 1] >> 1) - image * N);
    const int64_t first_tile = g.first_tiles[ticket];  // of the group
    int32_t* ranks = g.ranks + image * N;
    const T* boxes = static_cast<const T*>(p.boxes) + image * N * 4;

    int n = end - begin;  // alive candidates
    if (tid < n) {
      alive_rank[tid] = ranks[begin + tid];
      alive[tid] = load_box<T>(boxes + static_cast<int64_t>(alive_rank[tid]) * 4);
    }
    __syncthreads();

    // 1. The boxes kept by the group's earlier tiles, each tile once it is settled.
    int64_t room = M;  // boxes the group may still keep
    for (int64_t u = first_tile; u < ticket && n > 0 && room > 0; ++u) {
      if (tid == 0) shared_count = wait_settled(g.tile_status + u);
      __syncthreads();
      const int k = shared_count;
      room -= k;
      if (room <= 0) break;
      const int u_begin = static_cast<int>((g.tiles[u] >> 1) - image * N);
      if (tid < k) staged[tid] = load_box<T>(boxes + static_cast<int64_t>(__ldcg(ranks + u_begin + tid)) * 4);
      __syncthreads();
      n = sweep_and_compact<T>(alive, alive_rank, 0, n, staged, k, threshold, zero_exceeds, warp_totals);
    }

    // 2. Greedy NMS of what is left, a word of 64 candidates at a time.
    int kept_count = 0;
    for (int w0 = 0; w0 < n && kept_count < room; w0 += kWord) {
      const int wn = min(kWord, n - w0);
      {
        const int row = tid / kRowThreads, first_column = (tid % kRowThreads) * kRowColumns;
        unsigned long long bits = 0;
        if (row < wn) {
          const Box<V> a = alive[w0 + row];
          for (int c = max(first_column, row + 1); c < min(first_column + kRowColumns, wn); ++c)
            if (suppresses<T>(a, alive[w0 + c], threshold, zero_exceeds)) bits |= 1ULL << c;
        }
        for (int lanes = 1; lanes < kRowThreads; lanes <<= 1) bits |= __shfl_xor_sync(0xffffffffu, bits, lanes);
        if (tid % kRowThreads == 0) overlap[row] = bits;
      }
      __syncthreads();
      if (tid == 0) {  // greedy within the word, visiting only the candidates not yet removed
        const unsigned long long in_word = wn == kWord ? ~0ULL : (1ULL << wn) - 1;
        unsigned long long removed = 0, kept = 0;
        for (int64_t left = room - kept_count; left > 0; --left) {
          const unsigned long long open = in_word & ~removed & ~kept;  // all below the lowest are settled
          if (open == 0) break;
          const int i = __ffsll(static_cast<long long>(open)) - 1;
          kept |= 1ULL << i;
          removed |= overlap[i];
        }
        shared_kept = kept;
      }
      __syncthreads();
      const unsigned long long kept = shared_kept;
      if (tid < wn && (kept >> tid & 1)) {
        const int slot = __popcll(kept & ((1ULL << tid) - 1));
        const int rank = alive_rank[w0 + tid];
        staged[slot] = alive[w0 + tid];
        ranks[begin + kept_count + slot] = rank;  // the tile's kept ranks, for its group's later tiles
        atomicOr(g.kept + image * words + rank / kWord, 1ULL << (rank % kWord));
      }
      const int word_kept = __popcll(kept);
      kept_count += word_kept;
      __syncthreads();
      if (w0 + wn < n && kept_count < room)
        n = sweep_and_compact<T>(alive, alive_rank, w0 + wn, n, staged, word_kept, threshold, zero_exceeds,
                                 warp_totals);
    }

    // 3. Publish: the kept ranks (every thread's writes) before the count that announces them.
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      cuda::atomic_ref<int32_t, cuda::thread_scope_device> status(g.tile_status[ticket]);
      status.store(kept_count + 1, cuda::memory_order_release);
    }
  }
}

// Per image: the kept flags in score-rank order -> keep (original indices, at
// most max_output, then -1) and counts.
__global__ void __launch_bounds__(kThreads) write_kept_kernel(const NmsParams p, const unsigned long long* kept_flags) {
  __shared__ int warp_totals[kWarps];
  const int64_t N = p.num_boxes, M = p.max_output, words = (N + kWord - 1) / kWord;
  for (int64_t image = blockIdx.x; image < p.num_images; image += gridDim.x) {
    const unsigned long long* kept = kept_flags + image * words;
    const int64_t* order = p.order + image * N;
    int64_t* keep = p.keep + image * M;
    int64_t count = 0;
    for (int64_t w0 = 0; w0 < words && count < M; w0 += kThreads) {
      const int64_t w = w0 + threadIdx.x;
      unsigned long long bits = w < words ? kept[w] : 0;
      int total;
      int64_t slot = count + block_exclusive_sum(__popcll(bits), total, warp_totals);
      for (; bits && slot < M; bits &= bits - 1, ++slot)
        keep[slot] = order[w * kWord + __ffsll(static_cast<long long>(bits)) - 1];
      count += total;
    }
    count = min(count, M);
    for (int64_t m = count + threadIdx.x; m < M; m += kThreads) keep[m] = -1;
    if (threadIdx.x == 0) p.counts[image] = count;
  }
}

template <typename T>
LaunchStatus launch(const NmsParams& p, const NmsCudaGroups& g, cudaStream_t stream) {
  using V = typename DeviceArith<T>::V;
  const V threshold = threshold_in<V>(p.iou_threshold);
  const bool zero_exceeds = V(0) > threshold;
  greedy_kernel<T><<<g.num_blocks, kThreads, 0, stream>>>(p, g, threshold, zero_exceeds);
  FASTMASK_RETURN_IF_LAUNCH_FAILED("nms greedy_kernel");
  const int64_t write_blocks = p.num_images < g.num_blocks ? p.num_images : g.num_blocks;
  write_kept_kernel<<<static_cast<unsigned>(write_blocks), kThreads, 0, stream>>>(p, g.kept);
  FASTMASK_RETURN_IF_LAUNCH_FAILED("nms write_kept_kernel");
  return {};
}

}  // namespace

int64_t nms_kept_words(int64_t num_boxes) { return (num_boxes + kWord - 1) / kWord; }

LaunchStatus multi_image_nms_cuda(const NmsParams& p, const NmsCudaGroups& g, cudaStream_t stream) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return launch<float>(p, g, stream);
    case ScalarKind::kFloat64: return launch<double>(p, g, stream);
    case ScalarKind::kFloat16: return launch<__half>(p, g, stream);
    case ScalarKind::kBFloat16: return launch<__nv_bfloat16>(p, g, stream);
  }
  return {cudaErrorInvalidValue, "nms (unknown dtype)"};
}

}  // namespace fastmask
