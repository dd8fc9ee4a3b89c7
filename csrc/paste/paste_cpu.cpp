// Mask pasting on the CPU: threads split the N x height output rows; each row
// is written once (zeros outside the mask's box). A thread keeps the padded
// mask and the x-taps of the mask it is on, and resamples two padded mask rows
// per output row, so no resized mask or full-image intermediate is allocated.
// The arithmetic is that of the F.interpolate call torchvision makes per mask
// ([1, 1, M + 2p, M + 2p] to the box): PyTorch's channels-last kernel for boxes
// with height + width <= 128, its separable one otherwise, rounded as PyTorch's
// kernels round on this CPU (common/linear_interp.h).
#include <algorithm>
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

// The mask's values in the rows of one output row from two padded mask rows. SeparableFused,
// FourTapFused: whether the blends of PyTorch's two kernels fuse.
template <typename A, bool SeparableFused, bool FourTapFused>
FASTMASK_FMA_CLONES void resample(const A* r0, const A* r1, const LinearTap<A>& ty, const LinearTap<A>* xs,
                                  bool channels_last_kernel, int64_t n, A* out) {
  if (channels_last_kernel) {  // one channel: that kernel's scalar loop
    for (int64_t x = 0; x < n; ++x)
      out[x] = four_tap<A, FourTapFused>(r0[xs[x].i0], r0[xs[x].i1], r1[xs[x].i0], r1[xs[x].i1], ty, xs[x], false);
    return;
  }
  for (int64_t x = 0; x < n; ++x) {
    const LinearTap<A>& t = xs[x];
    out[x] = blend<A, SeparableFused>(blend<A, SeparableFused>(r0[t.i0], t.w0, r0[t.i1], t.w1), ty.w0,
                                      blend<A, SeparableFused>(r1[t.i0], t.w0, r1[t.i1], t.w1), ty.w1);
  }
}

template <typename T, typename A, typename Out, bool SeparableFused, bool FourTapFused>
void run(const PasteParams& p, const TorchBilinearRounding& rounding) {
  const T* masks = static_cast<const T*>(p.masks);
  Out* out = static_cast<Out*>(p.out);
  const int64_t ph = p.mask_height + 2 * p.padding, pw = p.mask_width + 2 * p.padding;
  // As `pasted > threshold` on a tensor: the Python scalar is first rounded to the masks' dtype.
  const A threshold = static_cast<A>(static_cast<T>(static_cast<A>(p.threshold)));

  parallel_for(0, p.num_masks * p.height, 16, [&](int64_t begin, int64_t end) {
    int64_t current = -1;
    bool channels_last_kernel = false, index_fused = true;
    PasteBox<A> box{};
    std::vector<A> padded(ph * pw), values;
    std::vector<LinearTap<A>> xs;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / p.height, y = r % p.height;
      Out* row = out + r * p.width;
      if (n != current) {
        current = n;
        box = paste_box<A>(p, n);
        std::fill(padded.begin(), padded.end(), A(0));
        const T* m = masks + n * p.mask_height * p.mask_width;
        for (int64_t i = 0; i < p.mask_height; ++i)
          for (int64_t j = 0; j < p.mask_width; ++j)
            padded[(i + p.padding) * pw + j + p.padding] = static_cast<A>(m[i * p.mask_width + j]);
        // One channel, not channels_last: the thread count does not enter PyTorch's choice.
        channels_last_kernel = torch_takes_four_tap(false, 1, box.box_h, box.box_w, false);
        index_fused = (channels_last_kernel ? rounding.four_tap : rounding.separable).index_fused;
        xs.resize(box.col_end - box.col_begin);
        values.resize(xs.size());
        for (int64_t x = box.col_begin; x < box.col_end; ++x)
          xs[x - box.col_begin] = linear_tap<A>(x - box.x0, pw, box.box_w, box.step_w, index_fused);
      }
      int64_t x = 0;
      if (y >= box.row_begin && y < box.row_end) {
        const LinearTap<A> ty = linear_tap<A>(y - box.y0, ph, box.box_h, box.step_h, index_fused);
        for (; x < box.col_begin; ++x) row[x] = Out(0);
        resample<A, SeparableFused, FourTapFused>(padded.data() + ty.i0 * pw, padded.data() + ty.i1 * pw, ty, xs.data(), channels_last_kernel,
                           static_cast<int64_t>(xs.size()), values.data());
        for (const A v : values) {
          if constexpr (std::is_same_v<Out, bool>)
            row[x++] = static_cast<A>(static_cast<T>(v)) > threshold;  // as `pasted > threshold`
          else
            row[x++] = static_cast<Out>(v);
        }
      }
      std::fill(row + x, row + p.width, Out(0));
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
