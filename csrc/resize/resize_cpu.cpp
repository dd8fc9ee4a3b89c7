// Bilinear resize on the CPU, separable: the taps of each axis are computed
// once per job; each output row blends two source rows that were first
// normalised and resampled along x. Those resampled rows are cached (two per
// thread), so when upscaling a source row is resampled once for the ~2 output
// rows that use it. Where PyTorch would take its channels-last kernel
// (ResizeParams::torch_four_tap), each output value instead weighs the four taps
// of the two normalised source rows as that kernel does. Threads split the
// output rows of all planes of all jobs (one parallel region per call, however
// many images); padding rows and columns of the canvas are written here too, so
// the output is touched once.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "common/linear_interp.h"
#include "common/parallel.h"
#include "common/stable.h"
#include "resize_cpu.h"
#include "resize_registration.h"
#include "torch_rounding.h"

namespace fastmask {
namespace {

template <typename A>
std::vector<LinearTap<A>> axis_taps(int64_t in, int64_t out, double scale_factor, bool index_fused) {
  std::vector<LinearTap<A>> taps(out);
  const A step = source_step<A>(in, out, scale_factor);
  for (int64_t d = 0; d < out; ++d) taps[d] = linear_tap<A>(d, in, out, step, index_fused);
  return taps;
}

// uint8 sources: the normalised value of each level per channel, (v / 255 - mean) / std in
// float32 as torch computes `(image.float() / 255 - mean) / std`.
std::vector<float> uint8_table(const ResizeParams& p) {
  if (!p.normalise) return {};
  std::vector<float> table(p.channels * 256);
  for (int64_t c = 0; c < p.channels; ++c) {
    const float mean = static_cast<float>(p.mean[c]), std_dev = static_cast<float>(p.std[c]);
    for (int v = 0; v < 256; ++v) table[c * 256 + v] = (static_cast<float>(v) / 255.f - mean) / std_dev;
  }
  return table;
}

// Source row into `row`, normalised as torchvision does before resizing.
template <typename Src, typename A>
void load_row(const ResizeParams& p, const std::vector<float>& table, const Src* src, int64_t c, A* row) {
  const int64_t sx = p.src_stride[3];
  const int64_t w = p.in_width;
  if constexpr (std::is_same_v<Src, uint8_t>) {
    if (p.normalise) {
      const float* levels = table.data() + c * 256;
      for (int64_t x = 0; x < w; ++x) row[x] = levels[src[x * sx]];
      return;
    }
  } else {
    if (p.normalise) {
      // (image - mean) / std with mean and std in the image dtype, each operation rounded to it,
      // as torch does.
      const A mean = static_cast<A>(static_cast<Src>(p.mean[c])), std_dev = static_cast<A>(static_cast<Src>(p.std[c]));
      for (int64_t x = 0; x < w; ++x) {
        const A centred = static_cast<A>(static_cast<Src>(static_cast<A>(src[x * sx]) - mean));
        row[x] = static_cast<A>(static_cast<Src>(centred / std_dev));
      }
      return;
    }
  }
  for (int64_t x = 0; x < w; ++x) row[x] = static_cast<A>(src[x * sx]);
}

template <typename A, bool Fused>
FASTMASK_FMA_CLONES void resample_row(const A* row, const LinearTap<A>* taps, int64_t n, A* out) {
  for (int64_t x = 0; x < n; ++x)
    out[x] = blend<A, Fused>(row[taps[x].i0], taps[x].w0, row[taps[x].i1], taps[x].w1);
}

template <typename A, bool Fused>
FASTMASK_FMA_CLONES void blend_rows(const A* r0, A w0, const A* r1, A w1, int64_t n, A* out) {
  for (int64_t x = 0; x < n; ++x) out[x] = blend<A, Fused>(r0[x], w0, r1[x], w1);
}

// One output row from its two normalised source rows, as PyTorch's channels-last kernel.
template <typename A, bool Fused>
FASTMASK_FMA_CLONES void four_tap_row(const A* r0, const A* r1, const LinearTap<A>& ty, const LinearTap<A>* taps,
                                      bool vector_lane, int64_t n, A* out) {
  for (int64_t x = 0; x < n; ++x) {
    const LinearTap<A>& tx = taps[x];
    out[x] = four_tap<A, Fused>(r0[tx.i0], r0[tx.i1], r1[tx.i0], r1[tx.i1], ty, tx, vector_lane);
  }
}

template <typename Dst, typename A>
Dst store(A v) {
  if constexpr (std::is_same_v<Dst, uint8_t>) {
    return static_cast<uint8_t>(std::min(std::max(std::nearbyint(v), A(0)), A(255)));
  } else {
    return static_cast<Dst>(v);
  }
}

// The taps and uint8 table of one job, and where its rows start among the rows of all jobs.
template <typename A>
struct JobPlan {
  std::vector<LinearTap<A>> xs, ys;
  std::vector<float> table;
  int64_t first_row = 0;
};

// SeparableFused, FourTapFused: whether the blends of PyTorch's two kernels fuse (`rounding`).
template <typename Src, typename Dst, typename A, bool SeparableFused, bool FourTapFused>
void run(const ResizeParams* jobs, int64_t count, const TorchBilinearRounding& rounding) {
  std::vector<JobPlan<A>> plans(count + 1);
  int64_t max_in_width = 0, max_out_width = 0;
  for (int64_t j = 0; j < count; ++j) {
    const ResizeParams& p = jobs[j];
    const bool index_fused = (p.torch_four_tap ? rounding.four_tap : rounding.separable).index_fused;
    plans[j].xs = axis_taps<A>(p.in_width, p.out_width, p.scale_factor_w, index_fused);
    plans[j].ys = axis_taps<A>(p.in_height, p.out_height, p.scale_factor_h, index_fused);
    if constexpr (std::is_same_v<Src, uint8_t>) plans[j].table = uint8_table(p);
    plans[j + 1].first_row = plans[j].first_row + p.batch * p.channels * p.canvas_height;
    max_in_width = std::max(max_in_width, p.in_width);
    max_out_width = std::max(max_out_width, p.out_width);
  }

  parallel_for(0, plans[count].first_row, 8, [&](int64_t begin, int64_t end) {
    std::vector<A> source(max_in_width), source1(max_in_width), out(max_out_width);
    // Two resampled source rows, keyed by job and plane * in_height + row.
    std::vector<A> cached[2] = {std::vector<A>(max_out_width), std::vector<A>(max_out_width)};
    int64_t cached_job[2] = {-1, -1}, cached_key[2] = {-1, -1};
    int64_t j = std::upper_bound(plans.begin(), plans.end() - 1, begin,
                                 [](int64_t r, const JobPlan<A>& plan) { return r < plan.first_row; }) -
                plans.begin() - 1;
    for (int64_t r = begin; r < end; ++r) {
      while (r >= plans[j + 1].first_row) ++j;
      const ResizeParams& p = jobs[j];
      const JobPlan<A>& plan = plans[j];
      const Src* src = static_cast<const Src*>(p.src);
      auto resampled = [&](int64_t n, int64_t c, int64_t y, int keep) -> int {
        const int64_t key = (n * p.channels + c) * p.in_height + y;
        for (int s = 0; s < 2; ++s)
          if (cached_job[s] == j && cached_key[s] == key) return s;
        const int s = keep == 0 ? 1 : 0;
        const Src* source_row = src + n * p.src_stride[0] + c * p.src_stride[1] + y * p.src_stride[2];
        load_row<Src, A>(p, plan.table, source_row, c, source.data());
        resample_row<A, SeparableFused>(source.data(), plan.xs.data(), p.out_width, cached[s].data());
        cached_job[s] = j, cached_key[s] = key;
        return s;
      };

      const int64_t local = r - plan.first_row;
      const int64_t y = local % p.canvas_height, plane = local / p.canvas_height;
      const int64_t c = plane % p.channels, n = plane / p.channels;
      const int64_t dx = p.dst_stride[3];
      Dst* row = static_cast<Dst*>(p.dst) + n * p.dst_stride[0] + c * p.dst_stride[1] + y * p.dst_stride[2];
      int64_t x = 0;
      if (y < p.out_height) {
        const LinearTap<A>& t = plan.ys[y];
        if (p.torch_four_tap) {
          const Src* plane = src + n * p.src_stride[0] + c * p.src_stride[1];
          load_row<Src, A>(p, plan.table, plane + t.i0 * p.src_stride[2], c, source.data());
          load_row<Src, A>(p, plan.table, plane + t.i1 * p.src_stride[2], c, source1.data());
          four_tap_row<A, FourTapFused>(source.data(), source1.data(), t, plan.xs.data(), torch_vector_lane<A>(c, p.channels),
                                 p.out_width, out.data());
        } else {
          const int s0 = resampled(n, c, t.i0, -1);
          const int s1 = resampled(n, c, t.i1, s0);
          blend_rows<A, SeparableFused>(cached[s0].data(), t.w0, cached[s1].data(), t.w1, p.out_width, out.data());
        }
        for (; x < p.out_width; ++x) row[x * dx] = store<Dst>(out[x]);
      }
      for (; x < p.canvas_width; ++x) row[x * dx] = Dst(0);
    }
  });
}

template <bool SeparableFused, bool FourTapFused>
void run_types(const ResizeParams* jobs, int64_t count, const TorchBilinearRounding& r) {
  const ResizeParams& p = jobs[0];  // one call's jobs share their types
  if (p.src_uint8)
    return p.dst_uint8 ? run<uint8_t, uint8_t, float, SeparableFused, FourTapFused>(jobs, count, r)
                       : run<uint8_t, float, float, SeparableFused, FourTapFused>(jobs, count, r);
  switch (p.dtype) {
    case ScalarKind::kFloat32: return run<float, float, float, SeparableFused, FourTapFused>(jobs, count, r);
    case ScalarKind::kFloat64: return run<double, double, double, SeparableFused, FourTapFused>(jobs, count, r);
    case ScalarKind::kFloat16: return run<c10::Half, c10::Half, float, SeparableFused, FourTapFused>(jobs, count, r);
    case ScalarKind::kBFloat16:
      return run<c10::BFloat16, c10::BFloat16, float, SeparableFused, FourTapFused>(jobs, count, r);
  }
}

}  // namespace

void resize_bilinear_cpu(const ResizeParams* jobs, int64_t count, const TorchBilinearRounding& rounding) {
  if (count == 0) return;
  const bool separable = rounding.separable.blend_fused, four_tap = rounding.four_tap.blend_fused;
  if (separable && four_tap) return run_types<true, true>(jobs, count, rounding);
  if (separable) return run_types<true, false>(jobs, count, rounding);
  if (four_tap) return run_types<false, true>(jobs, count, rounding);
  return run_types<false, false>(jobs, count, rounding);
}

void resize_bilinear_cpu(const ResizeParams* jobs, int64_t count) {
  // uint8 output rounds the exact value (PyTorch's uint8 kernel is a fixed-point one): fused.
  if (count == 0) return;
  const bool exact = jobs[0].dst_uint8;
  resize_bilinear_cpu(jobs, count, exact ? TorchBilinearRounding{} : torch_bilinear_rounding(jobs[0].dtype));
}

STABLE_TORCH_LIBRARY_IMPL(fastmask, CPU, m) { ResizeOps<resize_bilinear_cpu>::register_impls(m); }

}  // namespace fastmask
