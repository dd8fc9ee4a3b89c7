// The deterministic backward's work split: which rows of which map a CUDA block owns, and the
// walk over the contributions that land in them. Host/device, so that a host test
// (cpp_test/test_roi_align.cpp) runs this very code and checks it against the CPU kernel.
//
// Each block owns kBandRows rows ("band") of one image of one level. Its threads test the RoIs
// of that (level, image) bucket together, then walk the ones that reach the band in
// increasing RoI order, thread by channel: per RoI only the bins, and per bin only the
// samples, whose taps can reach the band. Every gradient element is therefore written by one
// thread, in the CPU kernel's order (RoI, bin, sample, tap): no atomics, and the CPU's bits.
#pragma once

#include <cstdint>

#include "roi_align_geometry.h"

namespace fastmask {

constexpr int64_t kBandRows = 4;
// A sample at y has its taps in rows max(floor(y), 0) .. +1, clamped to the map: rows in
// [y - 1, y + 2], and in [y - 1, y + 1] when y >= 0. So a band starting at y0 >= 2 (or at 0)
// is reached only from y >= y0 - 1, which band_bins / band_samples rely on.
static_assert(kBandRows >= 2, "bands start at 0 or at row 2 or later");

struct BandTable {
  int64_t bands[kMaxLevels];        // bands per image of level l
  // Level l owns blocks [first_block[l], first_block[l] + batch_size * bands[l]). The coarsest
  // level comes first: its few bands each meet many RoIs, and should not be the tail.
  int64_t first_block[kMaxLevels];
  int64_t num_blocks;
};

FASTMASK_HOST_DEVICE BandTable band_table(const RoIAlignParams& p) {
  BandTable t{};
  for (int l = p.num_levels - 1; l >= 0; --l) {
    t.bands[l] = (p.levels[l].height + kBandRows - 1) / kBandRows;
    t.first_block[l] = t.num_blocks;
    t.num_blocks += p.batch_size * t.bands[l];
  }
  return t;
}

struct Band {
  int level;
  int64_t image;
  int64_t y0, y1;  // rows [y0, y1)
};

FASTMASK_HOST_DEVICE Band band_of_block(const BandTable& t, const RoIAlignParams& p, int64_t block) {
  Band b;
  // first_block[l] = blocks of the levels above l, so level l owns the blocks from
  // first_block[l] up to first_block[l - 1]: the first l with first_block[l] <= block
  // (an empty level l has first_block[l] == first_block[l - 1], and is passed over).
  b.level = 0;
  while (block < t.first_block[b.level]) ++b.level;
  const int64_t local = block - t.first_block[b.level];
  b.image = local / t.bands[b.level];
  b.y0 = (local % t.bands[b.level]) * kBandRows;
  const int64_t height = p.levels[b.level].height;
  b.y1 = b.y0 + kBandRows < height ? b.y0 + kBandRows : height;
  return b;
}

// The bins [first, last) along y of a RoI whose samples can reach rows [y0, y1): the samples
// of bin p lie (exactly) in cell p, [start + p bin, start + (p + 1) bin], and are computed
// within sample_error of that; those reaching the band are computed within [y0 - 1, y1].
template <typename A>
FASTMASK_HOST_DEVICE void band_bins(const RoIGeometry<A>& g, int64_t pooled_height, int64_t y0, int64_t y1,
                                    int64_t& first, int64_t& last) {
  const double error = sample_error(g.start_h, pooled_height - 1, g.bin_h);
  cells_meeting(static_cast<double>(g.start_h), static_cast<double>(g.bin_h), pooled_height,
                static_cast<double>(y0 - 1) - error, static_cast<double>(y1) + error, first, last);
}

// The samples [first, last) of bin ph that can reach rows [y0, y1), among those the CPU
// kernel visits (sample_range); axis_tap and the row test decide exactly.
template <typename A>
FASTMASK_HOST_DEVICE void band_samples(const RoIGeometry<A>& g, int64_t ph, int64_t height, int64_t y0, int64_t y1,
                                       int64_t& first, int64_t& last) {
  int64_t map_first, map_last;
  sample_range(g.start_h, ph, g.bin_h, g.grid_h, height, map_first, map_last);
  sample_span(g.start_h, ph, g.bin_h, g.grid_h, static_cast<double>(y0 - 1), static_cast<double>(y1), first, last);
  first = first > map_first ? first : map_first;
  last = last < map_last ? last : map_last;
}

// Whether RoI k adds anything to the band: on its level and image, and with bins [ph0, ph1)
// (non-empty) that can reach the band's rows. Its geometry goes to g.
template <typename A>
FASTMASK_HOST_DEVICE bool band_roi(const RoIAlignParams& p, const Band& band, int64_t k, RoIGeometry<A>& g,
                                   int64_t& ph0, int64_t& ph1) {
  int64_t level;
  g = level_roi_geometry<A>(p, k, level);
  // The bucket holds only such RoIs (and invalid ones); testing keeps the writes right
  // whatever the bucketing.
  if (!g.valid || level != band.level || g.batch != band.image) return false;
  band_bins(g, p.pooled_height, band.y0, band.y1, ph0, ph1);
  return ph0 < ph1;
}

// Index of the lowest set bit of a non-zero word.
FASTMASK_HOST_DEVICE int lowest_bit(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __ffs(bits) - 1;
#else
  return __builtin_ctz(bits);
#endif
}

// The RoIs of the band's bucket (p.roi_order[p.bucket_begin[b] .. p.bucket_begin[b + 1]),
// b = level * batch_size + image) that band_roi accepts, in increasing order: visit(k).
// They are tested `threads` at a time: chunk_masks(base, end) returns, for RoIs
// base + t (t < threads, base + t < end), bit t % 32 of word t / 32 set when band_roi accepts
// it. (On the device each thread tests one RoI; see backward_deterministic_kernel.)
template <typename ChunkMasks, typename Visit>
FASTMASK_HOST_DEVICE void for_each_band_roi(const RoIAlignParams& p, const Band& band, int64_t threads,
                                            ChunkMasks chunk_masks, Visit visit) {
  const int64_t bucket = band.level * p.batch_size + band.image;
  const int64_t begin = p.bucket_begin[bucket], end = p.bucket_begin[bucket + 1];
  for (int64_t base = begin; base < end; base += threads) {
    const uint32_t* masks = chunk_masks(base, end);
    for (int64_t word = 0; word * 32 < threads; ++word)
      for (uint32_t bits = masks[word]; bits != 0; bits &= bits - 1)
        visit(p.roi_order[base + word * 32 + lowest_bit(bits)]);
  }
}

// One sample's taps in the band: sample (iy, ix) of bin (ph, pw) of RoI `roi`; its rows
// y_low, y_high (equal on the map's last row) and columns x_low, x_high (equal on the last
// column); which rows are in the band.
struct BandSample {
  int64_t roi, ph, pw, iy, ix;
  int64_t y_low, y_high, x_low, x_high;
  bool low_in, high_in;
};

// The contributions of RoI k (accepted by band_roi, geometry g, bins [ph0, ph1)) to the band's
// rows, for channels c_first, c_first + c_step, ... < channels, in the CPU kernel's order per
// gradient element: bin, sample, tap. grad_out(k, c, ph, pw) loads the incoming gradient as A;
// add(sample, c, v1, v2, v3, v4) adds the four tap values (bilinear_weights' order; those of
// rows outside the band are 0 and must not be added), e.g. with add_sample_taps.
template <typename A, typename GradOut, typename AddSample>
FASTMASK_HOST_DEVICE void band_roi_backward(const RoIAlignParams& p, const Band& band, int64_t k,
                                            const RoIGeometry<A>& g, int64_t ph0, int64_t ph1, int64_t c_first,
                                            int64_t c_step, GradOut grad_out, AddSample add) {
  const RoIAlignLevel& lv = p.levels[band.level];
  const A count = static_cast<A>(g.grid_h * g.grid_w);
  for (int64_t ph = ph0; ph < ph1; ++ph) {
    int64_t iy0, iy1;
    band_samples(g, ph, lv.height, band.y0, band.y1, iy0, iy1);
    if (iy0 >= iy1) continue;
    for (int64_t pw = 0; pw < p.pooled_width; ++pw) {
      int64_t ix0, ix1;
      sample_range(g.start_w, pw, g.bin_w, g.grid_w, lv.width, ix0, ix1);
      for (int64_t c = c_first; c < p.channels; c += c_step) {
        const A go = grad_out(k, c, ph, pw);
        for (int64_t iy = iy0; iy < iy1; ++iy) {
          AxisTap<A> ty;
          if (!axis_tap(sample_coordinate(g.start_h, ph, g.bin_h, iy, g.grid_h), lv.height, ty)) continue;
          const bool low_in = ty.low >= band.y0 && ty.low < band.y1;
          const bool high_in = ty.high >= band.y0 && ty.high < band.y1;
          if (!low_in && !high_in) continue;
          for (int64_t ix = ix0; ix < ix1; ++ix) {
            AxisTap<A> tx;
            if (!axis_tap(sample_coordinate(g.start_w, pw, g.bin_w, ix, g.grid_w), lv.width, tx)) continue;
            const auto w = bilinear_weights(ty, tx);
            const A v1 = low_in ? go * w.w1 / count : A(0), v2 = low_in ? go * w.w2 / count : A(0);
            const A v3 = high_in ? go * w.w3 / count : A(0), v4 = high_in ? go * w.w4 / count : A(0);
            add(BandSample{k, ph, pw, iy, ix, ty.low, ty.high, tx.low, tx.high, low_in, high_in}, c, v1, v2, v3,
                v4);
          }
        }
      }
    }
  }
}

// Adds vb to element b after va to element a of one row (a == b on the map's last column).
template <typename A>
FASTMASK_HOST_DEVICE void add_row_taps(A* a, A* b, A va, A vb) {
  if (a == b) {
    *a = (*a + va) + vb;
  } else {
    const A old_a = *a, old_b = *b;  // both loads in flight before either store
    *a = old_a + va;
    *b = old_b + vb;
  }
}

// Adds one sample's tap values to a channels_last gradient (row pointers at channel c, pixel
// stride `channels`): to each element its taps' values in tap order, as the CPU's sequential
// += does, but with the loads of distinct elements issued together.
template <typename A>
FASTMASK_HOST_DEVICE void add_sample_taps(A* row_low, A* row_high, const BandSample& s, int64_t channels, A v1,
                                          A v2, A v3, A v4) {
  A* const low_l = row_low + s.x_low * channels;
  A* const low_h = row_low + s.x_high * channels;
  A* const high_l = row_high + s.x_low * channels;
  A* const high_h = row_high + s.x_high * channels;
  if (!(s.low_in && s.high_in) || s.y_low == s.y_high) {
    // One row (the other outside the band, or the map's last row: taps 0, 1 then 2, 3 there).
    if (s.low_in) add_row_taps(low_l, low_h, v1, v2);
    if (s.high_in) add_row_taps(high_l, high_h, v3, v4);
  } else if (s.x_low == s.x_high) {
    const A a = *low_l, b = *high_l;
    *low_l = (a + v1) + v2;
    *high_l = (b + v3) + v4;
  } else {
    const A a = *low_l, b = *low_h, c = *high_l, d = *high_h;
    *low_l = a + v1;
    *low_h = b + v2;
    *high_l = c + v3;
    *high_h = d + v4;
  }
}

}  // namespace fastmask
