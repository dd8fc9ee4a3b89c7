// Mask pasting on the CPU. The output, N x height rows, is written once, in order:
// zeros outside the masks' boxes, resampled values inside. Nearly all of a large output
// is zeros (100 masks into 1200 x 1200: ~2% inside boxes), and writing it, together with
// the page faults of the fresh tensor, is the cost, so
//  - the zeros between two boxes' row segments (the right of one row, the left of the
//    next, whole rows outside the box) are one memset;
//  - threads take chunks of rows (16 MB each, or fewer rows) from a shared counter,
//    so one mask into a large image keeps both cores busy, and a thread that got the box
//    rows (or lost its core to another process) does not hold up the others;
//  - a mask row is resampled along x once per thread and kept (two rows), so that an
//    output row inside a box is a vectorised blend of two resampled rows.
// No resized mask or full-image intermediate is allocated.
// The arithmetic is that of the F.interpolate call torchvision makes per mask
// ([1, 1, M + 2p, M + 2p] to the box): PyTorch's separable kernel, whose rows blend
// two taps along x and then two rows, or for boxes with height + width <= 128 its
// channels-last kernel (four taps weighed by products of weights), rounded as PyTorch's
// kernels round on this CPU (common/linear_interp.h).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/parallel.h"
#include "common/stable.h"
#include "paste_cpu.h"
#include "paste_geometry.h"
#include "paste_registration.h"
#include "resize/torch_rounding.h"

namespace fastmask {
namespace {

// Bytes of output per chunk of rows a thread takes: eight huge pages (common/huge_pages.h), so
// that a page is nearly always faulted in (zeroed by the kernel) and written by one core, and still
// many chunks per thread in a large output (35 in 100 x 1200 x 1200 floats on up to 8 threads).
// Measured with two threads on that output: chunks of one huge page were 27% slower than
// contiguous halves (the threads fault in neighbouring pages at once); 8 and 16 MB chunks were as
// fast as the halves. Outputs under 64 MB per thread get smaller chunks (four per thread, for
// balance): 10 and 4 masks into 800 x 1066 (34 and 14 MB, chunks of 4.3 and 1.7 MB) and 30 into
// 480 x 640 (37 MB) took 4.4-5.0, 0.4-1.3 and 4.3-5.4 ms on two threads, 67059f4 4.0-7.2,
// 0.7-0.8 and 5.1-6.2 ms: no slower (3 interleaved rounds).
constexpr int64_t kChunkBytes = int64_t(1) << 24;

// What the output holds for a pasted value: the value in the masks' dtype, or with a
// threshold, whether that value is above it (as `pasted > threshold` on the pasted tensor).
template <typename T, typename Out, typename A>
Out output_value(A v, A threshold) {
  if constexpr (std::is_same_v<Out, bool>)
    return static_cast<A>(static_cast<T>(v)) > threshold;
  else
    return static_cast<Out>(v);
}

// One padded mask row blended along x to the box's columns (the separable kernel's first pass).
template <typename A, bool Fused>
FASTMASK_FMA_CLONES void resample_row(const A* row, const LinearTap<A>* xs, int64_t n, A* out) {
  for (int64_t x = 0; x < n; ++x) out[x] = blend<A, Fused>(row[xs[x].i0], xs[x].w0, row[xs[x].i1], xs[x].w1);
}

// An output row of the separable kernel from two resampled rows: contiguous loads, the
// blend and the store in one vector loop.
template <typename T, typename Out, typename A, bool Fused>
FASTMASK_FMA_CLONES void blend_rows(const A* h0, const A* h1, const LinearTap<A>& ty, A threshold, int64_t n,
                                    Out* out) {
#pragma omp simd
  for (int64_t x = 0; x < n; ++x)
    out[x] = output_value<T, Out>(blend<A, Fused>(h0[x], ty.w0, h1[x], ty.w1), threshold);
}

// An output row of the channels-last kernel (one channel: its scalar loop's order) from two
// padded mask rows. Only boxes with height + width <= 128 take it, so it stays scalar.
template <typename T, typename Out, typename A, bool Fused>
FASTMASK_FMA_CLONES void four_tap_row(const A* r0, const A* r1, const LinearTap<A>& ty, const LinearTap<A>* xs,
                                      A threshold, int64_t n, Out* out) {
  for (int64_t x = 0; x < n; ++x)
    out[x] = output_value<T, Out>(four_tap<A, Fused>(r0[xs[x].i0], r0[xs[x].i1], r1[xs[x].i0], r1[xs[x].i1], ty,
                                                     xs[x], false),
                                  threshold);
}

// A thread's view of the mask it is pasting: its box, the padded mask, the x taps, and
// the last two mask rows resampled along x. Consecutive output rows use the same or the
// next mask rows (the taps of a row are i0 and i0 + 1, or i0 twice), so row i is kept in
// slot i % 2 and each is resampled once per thread.
template <typename T, typename A, bool SeparableFused>
struct MaskRows {
  const PasteParams& p;
  const TorchBilinearRounding& rounding;
  const int64_t ph = p.mask_height + 2 * p.padding, pw = p.mask_width + 2 * p.padding;
  int64_t mask = -1;
  PasteBox<A> box{};
  bool four_tap = false, index_fused = true;
  std::vector<A> padded = std::vector<A>(ph * pw);
  std::vector<LinearTap<A>> xs;
  std::vector<A> resampled[2];
  int64_t resampled_row[2] = {-1, -1};

  MaskRows(const PasteParams& params, const TorchBilinearRounding& r) : p(params), rounding(r) {}

  void load(int64_t n) {
    mask = n;
    box = paste_box<A>(p, n);
    std::fill(padded.begin(), padded.end(), A(0));
    const T* m = static_cast<const T*>(p.masks) + n * p.mask_height * p.mask_width;
    for (int64_t i = 0; i < p.mask_height; ++i)
      for (int64_t j = 0; j < p.mask_width; ++j)
        padded[(i + p.padding) * pw + j + p.padding] = static_cast<A>(m[i * p.mask_width + j]);
    // One channel, not channels_last: the thread count does not enter PyTorch's choice.
    four_tap = torch_takes_four_tap(false, 1, box.box_h, box.box_w, false);
    index_fused = (four_tap ? rounding.four_tap : rounding.separable).index_fused;
    xs.resize(box.col_end - box.col_begin);
    for (int64_t x = box.col_begin; x < box.col_end; ++x)
      xs[x - box.col_begin] = linear_tap<A>(x - box.x0, pw, box.box_w, box.step_w, index_fused);
    for (int s = 0; s < 2; ++s) resampled[s].resize(xs.size()), resampled_row[s] = -1;
  }

  const A* padded_row(int64_t i) const { return padded.data() + i * pw; }

  const A* resampled_row_of(int64_t i) {
    const int s = static_cast<int>(i & 1);
    if (resampled_row[s] != i) {
      resample_row<A, SeparableFused>(padded_row(i), xs.data(), static_cast<int64_t>(xs.size()), resampled[s].data());
      resampled_row[s] = i;
    }
    return resampled[s].data();
  }
};

template <typename Out>
void fill_zeros(Out* begin, Out* end) {  // all-zero bytes are 0 in every output dtype (bool too)
  if (end > begin) std::memset(static_cast<void*>(begin), 0, (end - begin) * sizeof(Out));
}

template <typename T, typename A, typename Out, bool SeparableFused, bool FourTapFused>
void run(const PasteParams& p, const TorchBilinearRounding& rounding) {
  Out* out = static_cast<Out*>(p.out);
  const int64_t rows = p.num_masks * p.height, threads = num_threads();
  // kChunkBytes of rows, or fewer where the output is small: four chunks per thread or more.
  const int64_t chunk_rows = std::max<int64_t>(
      1, std::min(kChunkBytes / static_cast<int64_t>(p.width * sizeof(Out)), rows / (4 * threads)));
  const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  // As `pasted > threshold` on a tensor: the Python scalar is first rounded to the masks' dtype.
  const A threshold = static_cast<A>(static_cast<T>(static_cast<A>(p.threshold)));

  std::atomic<int64_t> next_chunk{0};
  // One task per thread; each takes chunks until none is left (however many tasks run).
  parallel_for(0, std::min(threads, chunks), 1, [&](int64_t, int64_t) {
    MaskRows<T, A, SeparableFused> m(p, rounding);
    for (int64_t c = next_chunk++; c < chunks; c = next_chunk++) {
      const int64_t begin = c * chunk_rows, end = std::min(rows, begin + chunk_rows);
      Out* zeros = out + begin * p.width;  // start of the zeros not yet written
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / p.height, y = r % p.height;
        if (n != m.mask) m.load(n);
        const PasteBox<A>& box = m.box;
        if (y < box.row_begin || y >= box.row_end || box.col_begin == box.col_end) continue;
        Out* row = out + r * p.width;
        fill_zeros(zeros, row + box.col_begin);
        const LinearTap<A> ty = linear_tap<A>(y - box.y0, m.ph, box.box_h, box.step_h, m.index_fused);
        const int64_t width = box.col_end - box.col_begin;
        if (m.four_tap) {
          four_tap_row<T, Out, A, FourTapFused>(m.padded_row(ty.i0), m.padded_row(ty.i1), ty, m.xs.data(), threshold,
                                                width, row + box.col_begin);
        } else {
          const A* h0 = m.resampled_row_of(ty.i0);
          const A* h1 = m.resampled_row_of(ty.i1);
          blend_rows<T, Out, A, SeparableFused>(h0, h1, ty, threshold, width, row + box.col_begin);
        }
        zeros = row + box.col_end;
      }
      fill_zeros(zeros, out + end * p.width);
    }
  });
}

template <typename T, typename A, bool SeparableFused, bool FourTapFused>
void run_output(const PasteParams& p, const TorchBilinearRounding& rounding) {
  if (p.binary)
    run<T, A, bool, SeparableFused, FourTapFused>(p, rounding);
  else
    run<T, A, T, SeparableFused, FourTapFused>(p, rounding);
}

template <typename T, typename A>
void run_rounded(const PasteParams& p) {
  const TorchBilinearRounding& r = torch_bilinear_rounding(p.dtype);
  const bool separable = r.separable.blend_fused, four_tap = r.four_tap.blend_fused;
  if (separable && four_tap) return run_output<T, A, true, true>(p, r);
  if (separable) return run_output<T, A, true, false>(p, r);
  if (four_tap) return run_output<T, A, false, true>(p, r);
  return run_output<T, A, false, false>(p, r);
}

}  // namespace

void paste_masks_cpu(const PasteParams& p) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return run_rounded<float, float>(p);
    case ScalarKind::kFloat64: return run_rounded<double, double>(p);
    case ScalarKind::kFloat16: return run_rounded<c10::Half, float>(p);
    case ScalarKind::kBFloat16: return run_rounded<c10::BFloat16, float>(p);
  }
}

STABLE_TORCH_LIBRARY_IMPL(fastmask, CPU, m) { PasteOps<paste_masks_cpu>::register_impls(m); }

}  // namespace fastmask
