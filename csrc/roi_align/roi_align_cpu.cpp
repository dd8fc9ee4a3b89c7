// RoIAlign on the CPU: forward and backward, single- and multi-level, NCHW and
// channels_last, float32/float64/float16/bfloat16 (accumulating in float32).
//
// Work split:
//  - Per RoI, the y- and x-taps of every bin are computed once (separable
//    bilinear weights) and shared by all channels.
//  - NCHW: threads own channels. One channel plane of one image is small enough
//    to stay in cache while every RoI reads (forward) or writes (backward) it,
//    and no two threads ever write the same gradient element.
//  - channels_last: the innermost loop runs over contiguous channels and is
//    vectorised; forward threads own RoIs, backward threads own channel blocks.
// Per gradient element, contributions are added in torchvision's order (RoI,
// bin, sample, tap), so results are deterministic and equal torchvision's.
#include <algorithm>
#include <vector>

#include "common/parallel.h"
#include "common/scalar_kind_torch.h"
#include "common/stable_aten.h"
#include "roi_align_cpu.h"
#include "roi_align_registration.h"
#include "roi_align_geometry.h"
#include "roi_align_taps.h"

namespace fastmask {
namespace {

template <typename A>
struct RoITaps {
  RoIGeometry<A> geometry;
  int64_t level = 0;
  // Taps of bin p along y are y_taps[y_begin[p] .. y_begin[p + 1]).
  std::vector<AxisTap<A>> y_taps, x_taps;
  std::vector<int32_t> y_begin, x_begin;
};

template <typename A>
std::vector<RoITaps<A>> roi_taps(const RoIAlignParams& p) {
  std::vector<RoITaps<A>> all(p.num_rois);
  parallel_for(0, p.num_rois, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      RoITaps<A>& t = all[k];
      t.geometry = level_roi_geometry<A>(p, k, t.level);
      if (!t.geometry.valid) continue;
      const RoIAlignLevel& lv = p.levels[t.level];
      axis_taps(t.geometry.start_h, t.geometry.bin_h, t.geometry.grid_h, p.pooled_height, lv.height,
                t.y_taps, t.y_begin);
      axis_taps(t.geometry.start_w, t.geometry.bin_w, t.geometry.grid_w, p.pooled_width, lv.width,
                t.x_taps, t.x_begin);
    }
  });
  return all;
}

// One output bin of one channel plane (NCHW): torchvision's sum, sample by sample.
template <typename T, typename A>
inline A pool_bin(const T* plane, int64_t width, const RoITaps<A>& t, int64_t ph, int64_t pw) {
  A sum = 0.;
  for (int32_t i = t.y_begin[ph]; i < t.y_begin[ph + 1]; ++i) {
    const AxisTap<A>& ty = t.y_taps[i];
    const T* row_low = plane + ty.low * width;
    const T* row_high = plane + ty.high * width;
    for (int32_t j = t.x_begin[pw]; j < t.x_begin[pw + 1]; ++j) {
      const AxisTap<A>& tx = t.x_taps[j];
      const auto [w1, w2, w3, w4] = bilinear_weights(ty, tx);
      sum += w1 * static_cast<A>(row_low[tx.low]) + w2 * static_cast<A>(row_low[tx.high]) +
             w3 * static_cast<A>(row_high[tx.low]) + w4 * static_cast<A>(row_high[tx.high]);
    }
  }
  return sum;
}

template <typename T, typename A>
void forward_nchw(const RoIAlignParams& p, const std::vector<RoITaps<A>>& taps) {
  const int64_t C = p.channels, PH = p.pooled_height, PW = p.pooled_width;
  T* out = static_cast<T*>(p.output);
  parallel_for(0, C, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      for (int64_t k = 0; k < p.num_rois; ++k) {
        const RoITaps<A>& t = taps[k];
        T* o = out + (k * C + c) * PH * PW;
        if (!t.geometry.valid) {
          std::fill(o, o + PH * PW, T(0));
          continue;
        }
        const RoIAlignLevel& lv = p.levels[t.level];
        const T* plane = static_cast<const T*>(lv.features) +
                         (t.geometry.batch * C + c) * lv.height * lv.width;
        for (int64_t ph = 0; ph < PH; ++ph)
          for (int64_t pw = 0; pw < PW; ++pw) {
            A v = pool_bin<T, A>(plane, lv.width, t, ph, pw);
            v /= t.geometry.count;
            o[ph * PW + pw] = static_cast<T>(v);
          }
      }
    }
  });
}

// Reads channels_last features; writes the output channels_last, or NCHW when
// `nchw_output` (the NCHW path may transpose its input and come here).
template <typename T, typename A>
void forward_nhwc(const RoIAlignParams& p, const std::vector<RoITaps<A>>& taps, bool nchw_output) {
  const int64_t C = p.channels, PH = p.pooled_height, PW = p.pooled_width;
  const int64_t c_stride = nchw_output ? PH * PW : 1, bin_stride = nchw_output ? 1 : C;
  T* out = static_cast<T*>(p.output);
  parallel_for(0, p.num_rois, 1, [&](int64_t k_begin, int64_t k_end) {
    std::vector<A> acc(C);
    for (int64_t k = k_begin; k < k_end; ++k) {
      const RoITaps<A>& t = taps[k];
      T* o = out + k * PH * PW * C;  // output block of RoI k
      if (!t.geometry.valid) {
        std::fill(o, o + PH * PW * C, T(0));
        continue;
      }
      const RoIAlignLevel& lv = p.levels[t.level];
      const T* image = static_cast<const T*>(lv.features) + t.geometry.batch * lv.height * lv.width * C;
      for (int64_t ph = 0; ph < PH; ++ph)
        for (int64_t pw = 0; pw < PW; ++pw) {
          A* a = acc.data();
          std::fill(a, a + C, A(0));
          for (int32_t i = t.y_begin[ph]; i < t.y_begin[ph + 1]; ++i) {
            const AxisTap<A>& ty = t.y_taps[i];
            for (int32_t j = t.x_begin[pw]; j < t.x_begin[pw + 1]; ++j) {
              const AxisTap<A>& tx = t.x_taps[j];
              const auto [w1, w2, w3, w4] = bilinear_weights(ty, tx);
              const T* p1 = image + (ty.low * lv.width + tx.low) * C;
              const T* p2 = image + (ty.low * lv.width + tx.high) * C;
              const T* p3 = image + (ty.high * lv.width + tx.low) * C;
              const T* p4 = image + (ty.high * lv.width + tx.high) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c)
                a[c] += w1 * static_cast<A>(p1[c]) + w2 * static_cast<A>(p2[c]) +
                        w3 * static_cast<A>(p3[c]) + w4 * static_cast<A>(p4[c]);
            }
          }
          T* ob = o + (ph * PW + pw) * bin_stride;
          const A count = t.geometry.count;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            A v = a[c];
            v /= count;
            ob[c * c_stride] = static_cast<T>(v);
          }
        }
    }
  });
}

// Gradient accumulators are in A (float32 for half types) so that many small
// contributions are not lost to fp16 rounding; the binding casts at the end.
template <typename T, typename A>
void backward_nchw(const RoIAlignParams& p, const std::vector<RoITaps<A>>& taps) {
  const int64_t C = p.channels, PH = p.pooled_height, PW = p.pooled_width;
  const T* grad_out = static_cast<const T*>(p.grad_output);
  const int64_t* gs = p.grad_output_strides;
  parallel_for(0, C, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      for (int64_t k = 0; k < p.num_rois; ++k) {
        const RoITaps<A>& t = taps[k];
        if (!t.geometry.valid) continue;
        const RoIAlignLevel& lv = p.levels[t.level];
        A* plane = static_cast<A*>(lv.grad_features) + (t.geometry.batch * C + c) * lv.height * lv.width;
        const A count = static_cast<A>(t.geometry.grid_h * t.geometry.grid_w);
        const T* g_roi = grad_out + k * gs[0] + c * gs[1];
        for (int64_t ph = 0; ph < PH; ++ph)
          for (int64_t pw = 0; pw < PW; ++pw) {
            const A g = static_cast<A>(g_roi[ph * gs[2] + pw * gs[3]]);
            for (int32_t i = t.y_begin[ph]; i < t.y_begin[ph + 1]; ++i) {
              const AxisTap<A>& ty = t.y_taps[i];
              A* row_low = plane + ty.low * lv.width;
              A* row_high = plane + ty.high * lv.width;
              for (int32_t j = t.x_begin[pw]; j < t.x_begin[pw + 1]; ++j) {
                const AxisTap<A>& tx = t.x_taps[j];
                const auto [w1, w2, w3, w4] = bilinear_weights(ty, tx);
                row_low[tx.low] += g * w1 / count;
                row_low[tx.high] += g * w2 / count;
                row_high[tx.low] += g * w3 / count;
                row_high[tx.high] += g * w4 / count;
              }
            }
          }
      }
    }
  });
}

template <typename T, typename A>
void backward_nhwc(const RoIAlignParams& p, const std::vector<RoITaps<A>>& taps) {
  const int64_t C = p.channels, PH = p.pooled_height, PW = p.pooled_width;
  const T* grad_out = static_cast<const T*>(p.grad_output);
  const int64_t* gs = p.grad_output_strides;
  // Channel blocks: enough for every thread, long enough to vectorise.
  const int64_t block = std::max<int64_t>(16, (C + num_threads() - 1) / num_threads());
  const int64_t num_blocks = (C + block - 1) / block;
  parallel_for(0, num_blocks, 1, [&](int64_t b_begin, int64_t b_end) {
    std::vector<A> g(block);
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t c0 = b * block, nc = std::min(block, C - c0);
      for (int64_t k = 0; k < p.num_rois; ++k) {
        const RoITaps<A>& t = taps[k];
        if (!t.geometry.valid) continue;
        const RoIAlignLevel& lv = p.levels[t.level];
        A* image = static_cast<A*>(lv.grad_features) + t.geometry.batch * lv.height * lv.width * C + c0;
        const A count = static_cast<A>(t.geometry.grid_h * t.geometry.grid_w);
        for (int64_t ph = 0; ph < PH; ++ph)
          for (int64_t pw = 0; pw < PW; ++pw) {
            const T* g_bin = grad_out + k * gs[0] + c0 * gs[1] + ph * gs[2] + pw * gs[3];
            for (int64_t c = 0; c < nc; ++c) g[c] = static_cast<A>(g_bin[c * gs[1]]);
            for (int32_t i = t.y_begin[ph]; i < t.y_begin[ph + 1]; ++i) {
              const AxisTap<A>& ty = t.y_taps[i];
              for (int32_t j = t.x_begin[pw]; j < t.x_begin[pw + 1]; ++j) {
                const AxisTap<A>& tx = t.x_taps[j];
                const auto [w1, w2, w3, w4] = bilinear_weights(ty, tx);
                A* q1 = image + (ty.low * lv.width + tx.low) * C;
                A* q2 = image + (ty.low * lv.width + tx.high) * C;
                A* q3 = image + (ty.high * lv.width + tx.low) * C;
                A* q4 = image + (ty.high * lv.width + tx.high) * C;
                // Sequential, not fused: q1..q4 may alias at the map's border.
                for (int64_t c = 0; c < nc; ++c) q1[c] += g[c] * w1 / count;
                for (int64_t c = 0; c < nc; ++c) q2[c] += g[c] * w2 / count;
                for (int64_t c = 0; c < nc; ++c) q3[c] += g[c] * w3 / count;
                for (int64_t c = 0; c < nc; ++c) q4[c] += g[c] * w4 / count;
              }
            }
          }
      }
    }
  });
}

// NCHW forward: when RoIs read each pixel many times over (the usual detection
// case), transposing the features to channels_last once and running the
// vectorised channels-innermost kernel is several times faster than gathering
// from NCHW planes. Few or small RoIs keep the direct NCHW kernel.
template <typename T, typename A>
bool worth_transposing(const RoIAlignParams& p, const std::vector<RoITaps<A>>& taps) {
  if (p.channels < 8) return false;
  int64_t samples = 0, pixels = 0;
  for (const auto& t : taps) samples += static_cast<int64_t>(t.y_taps.size() * t.x_taps.size());
  for (int l = 0; l < p.num_levels; ++l) pixels += p.batch_size * p.levels[l].height * p.levels[l].width;
  return 4 * samples > pixels;  // four taps per sample vs one transposed read+write per pixel
}

template <typename T, typename A>
void run_forward(const RoIAlignParams& p) {
  const auto taps = roi_taps<A>(p);
  if (p.channels_last) return forward_nhwc<T, A>(p, taps, /*nchw_output=*/false);
  if (!worth_transposing<T, A>(p, taps)) return forward_nchw<T, A>(p, taps);
  RoIAlignParams transposed = p;
  std::vector<Tensor> buffers;
  for (int l = 0; l < p.num_levels; ++l) {
    const RoIAlignLevel& lv = p.levels[l];
    const int64_t sizes[4] = {p.batch_size, p.channels, lv.height, lv.width};
    const int64_t strides[4] = {p.channels * lv.height * lv.width, lv.height * lv.width, lv.width, 1};
    const Tensor nchw = torch::stable::from_blob(const_cast<void*>(lv.features), sizes, strides,
                                                 Device(DeviceType::CPU), scalar_type_of<T>());
    buffers.push_back(aten::contiguous(nchw, MemoryFormat::ChannelsLast));
    transposed.levels[l].features = buffers.back().const_data_ptr();
  }
  forward_nhwc<T, A>(transposed, taps, /*nchw_output=*/true);
}

template <typename T, typename A>
void run_backward(const RoIAlignParams& p) {
  const auto taps = roi_taps<A>(p);
  if (p.channels_last)
    backward_nhwc<T, A>(p, taps);
  else
    backward_nchw<T, A>(p, taps);
}

}  // namespace

void roi_align_forward_cpu(const RoIAlignParams& p) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return run_forward<float, float>(p);
    case ScalarKind::kFloat64: return run_forward<double, double>(p);
    case ScalarKind::kFloat16: return run_forward<c10::Half, float>(p);
    case ScalarKind::kBFloat16: return run_forward<c10::BFloat16, float>(p);
  }
}

void roi_align_backward_cpu(const RoIAlignParams& p) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return run_backward<float, float>(p);
    case ScalarKind::kFloat64: return run_backward<double, double>(p);
    case ScalarKind::kFloat16: return run_backward<c10::Half, float>(p);
    case ScalarKind::kBFloat16: return run_backward<c10::BFloat16, float>(p);
  }
}

namespace {

RoIAlignBackend cpu_backend(bool /*deterministic: the CPU kernels always are*/) {
  RoIAlignBackend b;
  b.forward = roi_align_forward_cpu;
  b.backward = roi_align_backward_cpu;
  b.check_indices = true;
  return b;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, CPU, m) { RoIAlignOps<cpu_backend>::register_impls(m); }

}  // namespace fastmask
