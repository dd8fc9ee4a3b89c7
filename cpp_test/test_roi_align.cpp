// C++ tests of the RoIAlign ops, built and run by CMakeLists.txt (ctest); non-zero on failure.
//  1. fastmask::roi_align (CPU) through the PyTorch dispatcher, as a libtorch user would call
//     it, against bilinear samples computed here by hand.
//  2. The sample bounds of roi_align_geometry.h (sample_span, sample_range) on huge grids.
//  3. The deterministic CUDA backward's work split (roi_align_band.h: bands, buckets, clamped
//     bin and sample ranges) run on the host, block by block: per gradient element it must add
//     exactly the CPU kernel's contributions in the CPU kernel's order, and its sums must equal
//     the CPU backward op's bit for bit. (The same header code runs in the CUDA kernel.)
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bucket_rois_host.h"
#include "roi_align/roi_align_params.h"
#include "roi_align/roi_align_band.h"
#include "roi_align/roi_align_geometry.h"

namespace {

using namespace fastmask;

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("[%s] %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// The 4x4 test image: channel 0 is v = 4y + x (arange), channel 1 is v^2 (not
// linear, so the bilinear weights themselves are exercised).
constexpr int64_t H = 4, W = 4;
double pixel(int64_t c, int64_t y, int64_t x) {
  const double v = static_cast<double>(y * W + x);
  return c == 0 ? v : v * v;
}

// Bilinear sample at (y, x) with RoIAlign's border rules: zero outside
// [-1, size], coordinates clamped to the last pixel.
double bilinear(int64_t c, double y, double x) {
  if (y < -1.0 || y > H || x < -1.0 || x > W) return 0.0;
  y = std::max(y, 0.0);
  x = std::max(x, 0.0);
  int64_t y0 = static_cast<int64_t>(y), x0 = static_cast<int64_t>(x), y1, x1;
  if (y0 >= H - 1) { y0 = y1 = H - 1; y = static_cast<double>(y0); } else { y1 = y0 + 1; }
  if (x0 >= W - 1) { x0 = x1 = W - 1; x = static_cast<double>(x0); } else { x1 = x0 + 1; }
  const double ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx;
  return hy * hx * pixel(c, y0, x0) + hy * lx * pixel(c, y0, x1) + ly * hx * pixel(c, y1, x0) +
         ly * lx * pixel(c, y1, x1);
}

// Expected output bin (ph, pw) of one RoI (box in input pixels, spatial_scale 1,
// aligned=true: the box is shifted by -0.5): the mean of grid x grid samples.
double expected_bin(int64_t c, const double box[4], int64_t ph, int64_t pw, int64_t pooled,
                    int64_t grid) {
  const double x0 = box[0] - 0.5, y0 = box[1] - 0.5;
  const double bin_w = (box[2] - box[0]) / pooled, bin_h = (box[3] - box[1]) / pooled;
  double sum = 0;
  for (int64_t iy = 0; iy < grid; ++iy)
    for (int64_t ix = 0; ix < grid; ++ix)
      sum += bilinear(c, y0 + ph * bin_h + (iy + 0.5) * bin_h / grid,
                      x0 + pw * bin_w + (ix + 0.5) * bin_w / grid);
  return sum / static_cast<double>(grid * grid);
}

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}


void test_dispatcher_roi_align() {
  using RoIAlignFn = at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t,
                                int64_t, bool, bool);
  std::optional<c10::TypedOperatorHandle<RoIAlignFn>> handle;
  try {
    handle = c10::Dispatcher::singleton().findSchemaOrThrow("fastmask::roi_align", "").typed<RoIAlignFn>();
  } catch (const c10::Error& e) {
    check(false, std::string("fastmask::roi_align is registered (is libfastmask_ops loaded?): ") +
                     e.what_without_backtrace());
    return;
  }
  const auto& op = *handle;
  check(true, "schema found: " + c10::str(op.schema()));
  check(op.hasKernelForDispatchKey(c10::DispatchKey::CPU), "a CPU kernel is registered");
  std::printf("[info] CUDA kernel registered: %s (FASTMASK_CUDA builds only; not tested here)\n",
              op.hasKernelForDispatchKey(c10::DispatchKey::CUDA) ? "yes" : "no");

  // Input [1, 2, 4, 4]: channel 0 = arange(16), channel 1 = arange(16)^2.
  const at::Tensor base = at::arange(H * W, at::kFloat).reshape({1, 1, H, W});
  const at::Tensor input = at::cat({base, base * base}, 1).contiguous();
  check(input.sizes() == at::IntArrayRef({1, 2, H, W}), "input is [1, 2, 4, 4]");

  // Two RoIs (batch, x1, y1, x2, y2). The first covers pixels [0.5, 2.5]^2: with
  // aligned=true that is [0, 2]^2 on the sampling grid, 2x2 bins of size 1, and
  // sampling_ratio=2 puts the samples at 0.25 and 0.75 within each bin. The second
  // reaches past the right/bottom border (samples are clamped to the last pixel).
  const double boxes[2][4] = {{0.5, 0.5, 2.5, 2.5}, {1.0, 2.0, 4.5, 4.25}};
  const at::Tensor rois = at::tensor({0.0, boxes[0][0], boxes[0][1], boxes[0][2], boxes[0][3],
                                      0.0, boxes[1][0], boxes[1][1], boxes[1][2], boxes[1][3]},
                                     at::kFloat)
                              .reshape({2, 5});
  constexpr int64_t K = 2, C = 2, P = 2;

  for (const int64_t sampling_ratio : {int64_t{2}, int64_t{1}}) {
    const std::string tag = "sampling_ratio=" + std::to_string(sampling_ratio) + ": ";
    at::Tensor out;
    try {
      out = op.call(input, rois, /*spatial_scale=*/1.0, P, P, sampling_ratio, /*aligned=*/true,
                    /*deterministic=*/false);
    } catch (const std::exception& e) {
      check(false, tag + "roi_align raised " + e.what());
      continue;
    }
    check(out.sizes() == at::IntArrayRef({K, C, P, P}),
          tag + "output shape [K, C, PH, PW] = [2, 2, 2, 2], got " + c10::str(out.sizes()));
    check(out.scalar_type() == at::kFloat, tag + "output dtype float32");
    if (out.sizes() != at::IntArrayRef({K, C, P, P})) continue;
    const at::Tensor o = out.contiguous();
    const float* got = o.const_data_ptr<float>();
    double max_err = 0;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ph = 0; ph < P; ++ph)
          for (int64_t pw = 0; pw < P; ++pw) {
            const double want = expected_bin(c, boxes[k], ph, pw, P, sampling_ratio);
            const double have = got[((k * C + c) * P + ph) * P + pw];
            max_err = std::max(max_err, std::abs(want - have) / std::max(1.0, std::abs(want)));
          }
    check(max_err < 1e-5, tag + "all 16 bins match the hand-computed bilinear means (max rel err " +
                              fmt(max_err) + ")");
    if (sampling_ratio == 2) {
      // Channel 0 is linear, so bin means are 4 * mean(y) + mean(x) exactly:
      // bin centres (0.5, 0.5), (0.5, 1.5), (1.5, 0.5), (1.5, 1.5) -> 2.5, 3.5, 6.5, 7.5.
      const double lit[4] = {2.5, 3.5, 6.5, 7.5};
      bool ok = true;
      std::string s;
      for (int i = 0; i < 4; ++i) {
        ok = ok && std::abs(got[i] - lit[i]) < 1e-5;
        s += (i ? ", " : "") + fmt(got[i]);
      }
      check(ok, tag + "roi 0, channel 0 = [2.5, 3.5, 6.5, 7.5], got [" + s + "]");
      // Channel 1, bin (0, 0): samples at y, x in {0.25, 0.75}. E.g. (0.25, 0.25) ->
      // 0.5625*0 + 0.1875*1 + 0.1875*16 + 0.0625*25 = 4.75; the four samples are
      // 4.75, 6.25, 13.75, 17.25 (hand-computed), mean 10.5.
      check(std::abs(got[4] - 10.5) < 1e-5, tag + "roi 0, channel 1, bin (0,0) = 10.5, got " + fmt(got[4]));
    }
  }

  // A RoI whose batch index (5) is outside the batch of 1: the CPU backend raises, across the
  // stable ABI as std::out_of_range (Python's IndexError); other argument errors are
  // std::runtime_error whose message starts with the Python class ("ValueError: ...").
  {
    const at::Tensor bad = at::tensor({5.0, 0.0, 0.0, 2.0, 2.0}, at::kFloat).reshape({1, 5});
    bool index_error = false;
    std::string msg;
    try {
      op.call(input, bad, 1.0, P, P, 2, true, false);
    } catch (const std::out_of_range& e) {
      index_error = true;
      msg = e.what();
    } catch (const std::exception& e) {
      msg = e.what();
    }
    check(index_error, "batch index 5 on a batch of 1 throws std::out_of_range" +
                           (msg.empty() ? std::string() : ": " + msg.substr(0, msg.find('\n'))));
    bool value_error = false;
    try {
      op.call(input, rois, -1.0, P, P, 2, true, false);
    } catch (const std::runtime_error& e) {
      value_error = std::string(e.what()).rfind("ValueError: fastmask.roi_align: spatial_scale", 0) == 0;
      msg = e.what();
    }
    check(value_error, "spatial_scale -1 throws std::runtime_error(\"ValueError: ...\"): " + msg);
  }

}

// ----------------------------------------------------------------------------- sample bounds

std::string describe(const char* what, double a, double b, double c, double d, int64_t e, int64_t f) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s (start %.9g, bin %.9g, lo %.9g, hi %.9g, grid %lld, p %lld)", what, a, b,
                c, d, static_cast<long long>(e), static_cast<long long>(f));
  return buf;
}

// A magnitude 10^U(lo, hi), negative with probability `negative`.
double log_uniform(std::mt19937_64& rng, double lo, double hi, double negative = 0.0) {
  const double m = std::pow(10.0, std::uniform_real_distribution<double>(lo, hi)(rng));
  return std::uniform_real_distribution<double>(0, 1)(rng) < negative ? -m : m;
}

// sample_span must keep every sample whose coordinate, as sample_coordinate computes it, lies
// in [lo, hi]: grids up to 2^31 - 1 samples (where (i + .5f) rounds), huge and inverted bins.
// Computed coordinates are monotone in i (each rounding is), so the two samples just outside
// the span bound all the others; small grids are also checked sample by sample.
template <typename T>
void test_sample_bounds(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  constexpr int kCases = 40000;
  int bad = 0;
  std::string first_bad;
  int64_t walked = 0, needed = 0;
  for (int n = 0; n < kCases; ++n) {
    const T start = static_cast<T>(log_uniform(rng, -1, 9, 0.5));
    const T bin = static_cast<T>(log_uniform(rng, -3, 8, 0.2));
    const int64_t grid = n % 3 == 0 ? std::uniform_int_distribution<int64_t>(1, 8)(rng)
                                    : static_cast<int64_t>(std::min(log_uniform(rng, 0, 9.4), 2147483647.0));
    const int64_t p = std::uniform_int_distribution<int64_t>(0, 20)(rng);
    auto coord = [&](int64_t i) { return static_cast<double>(sample_coordinate(start, p, bin, i, grid)); };
    // A band-like window, half the time around one of the samples.
    const double centre = n % 2 ? coord(std::uniform_int_distribution<int64_t>(0, grid - 1)(rng)) : uniform(-50, 1000);
    const double lo = std::floor(centre + uniform(-4, 2)), hi = lo + std::floor(uniform(0, 6));
    int64_t first, last;
    sample_span(start, p, bin, grid, lo, hi, first, last);
    auto inside = [&](int64_t i) {
      const double c = coord(i);
      return c >= lo && c <= hi;
    };
    // Samples before the span, and from its end on (from `first` when it is empty), are out.
    const int64_t end = std::max(first, last);
    bool ok = first >= 0 && last <= grid;
    if (bin > 0) {
      ok = ok && (first == 0 || coord(first - 1) < lo) && (end >= grid || coord(end) > hi);
    } else if (bin < 0) {
      ok = ok && (first == 0 || coord(first - 1) > hi) && (end >= grid || coord(end) < lo);
    } else {
      ok = ok && first == 0 && last == grid;
    }
    if (grid <= 4096) {
      for (int64_t i = 0; i < grid; ++i) ok = ok && (inside(i) <= (i >= first && i < last));
    }
    if (last - first <= 64) {
      walked += std::max<int64_t>(last - first, 0);
      for (int64_t i = first; i < last; ++i) needed += inside(i);
    }
    if (!ok && bad++ == 0) first_bad = describe("sample_span lost a sample", start, bin, lo, hi, grid, p);
  }
  check(bad == 0, std::string(sizeof(T) == 4 ? "float" : "double") +
                      ": sample_span keeps every sample in [lo, hi] in " +
                      std::to_string(kCases) + " random cases (grids to 2^31, huge and inverted bins; walks " +
                      std::to_string(walked) + " samples for " + std::to_string(needed) + " inside)" +
                      (bad ? ", " + std::to_string(bad) + " failures, first: " + first_bad : ""));
}

// Boxes whose extent overflows T (finite corners, infinite bin): every sample coordinate is
// +-inf or NaN, so the sample bounds must be empty rather than the whole (2^31) grid, which
// the CPU and CUDA kernels would walk for seconds per bin. And a batch index in (-1, 0)
// truncates to image 0, which a batch of 0 images lacks (the CUDA forward would read it).
template <typename T>
void test_degenerate_geometry() {
  const std::string tag = sizeof(T) == 4 ? "float: " : "double: ";
  const T big = std::numeric_limits<T>::max() / 2 * T(1.5);
  const T roi[5] = {T(0), -big, T(0), big, T(3)};
  const RoIGeometry<T> g = roi_geometry<T>(roi, T(1), 7, 7, -1, false, 1);
  int64_t first = -1, last = -1, band_first = -1, band_last = -1;
  sample_range(g.start_w, 3, g.bin_w, g.grid_w, 10, first, last);
  const Band band{0, 0, 0, 4};
  band_samples(g, 0, 10, band.y0, band.y1, band_first, band_last);
  bool finite_sample = false;
  for (int64_t i : {int64_t{0}, int64_t{1}, g.grid_w / 2, g.grid_w - 1})
    for (int64_t p : {0, 1, 6}) finite_sample = finite_sample || is_finite_value(sample_coordinate(g.start_w, p, g.bin_w, i, g.grid_w));
  check(g.valid && !is_finite_value(g.bin_w) && g.grid_w >= INT32_MAX && !finite_sample && first >= last,
        tag + "a box whose width overflows has no sample on the map, and sample_range walks none (got [" +
            std::to_string(first) + ", " + std::to_string(last) + ") of a grid of " + std::to_string(g.grid_w) + ")");
  const T tall[5] = {T(0), T(0), -big, T(3), big};
  const RoIGeometry<T> gt = roi_geometry<T>(tall, T(1), 7, 7, -1, true, 1);
  int64_t ph0, ph1;
  band_bins(gt, 7, band.y0, band.y1, ph0, ph1);
  int64_t walked = 0;
  for (int64_t ph = ph0; ph < ph1; ++ph) {
    band_samples(gt, ph, 10, band.y0, band.y1, band_first, band_last);
    walked += std::max<int64_t>(band_last - band_first, 0);
  }
  check(walked == 0, tag + "a box whose height overflows: the band walk visits no sample (" + std::to_string(walked) + ")");
  const T half_below[5] = {T(-0.5), T(1), T(1), T(5), T(5)};
  const RoIGeometry<T> none = roi_geometry<T>(half_below, T(1), 2, 2, 2, true, 0);
  const RoIGeometry<T> one = roi_geometry<T>(half_below, T(1), 2, 2, 2, true, 1);
  check(!none.valid && one.valid && one.batch == 0,
        tag + "batch index -0.5 is image 0: valid in a batch of 1, invalid in a batch of 0");
}

// ----------------------------------------------------------------------------- band walk

struct Contribution {  // one addition: RoI, bin, sample, tap
  int64_t roi, ph, pw, iy, ix;
  int tap;
  bool operator==(const Contribution&) const = default;
};

using MultiLevelBackwardFn = std::vector<at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                     c10::ArrayRef<double>, c10::SymIntArrayRef, c10::SymIntArrayRef,
                                                     c10::SymInt, c10::SymInt, int64_t, int64_t, int64_t, bool, bool,
                                                     bool);

// One random multi-level call: sizes, RoIs of every awkward kind, levels, incoming gradient.
struct BandCase {
  int64_t batch, channels, num_levels, pooled_h, pooled_w, sampling_ratio;
  bool aligned;
  std::vector<int64_t> heights, widths;
  std::vector<double> scales;
  at::Tensor rois, levels, grad;
  bool indices_in_range = true;  // else the CPU op raises; only the traces are compared
};

BandCase random_band_case(std::mt19937_64& rng, at::ScalarType dtype, int n) {
  auto uniform = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  auto integer = [&](int64_t a, int64_t b) { return std::uniform_int_distribution<int64_t>(a, b)(rng); };
  BandCase c;
  c.batch = n % 10 == 7 ? 1 : integer(1, 3);
  c.channels = n % 10 == 3 || n % 20 == 17 ? integer(33, 40) : integer(1, 4);  // some over one warp
  c.num_levels = integer(1, 4);
  c.pooled_h = integer(1, 5);
  c.pooled_w = integer(1, 4);
  const int64_t ratios[] = {-1, 0, 1, 2, 3, 5};
  c.sampling_ratio = ratios[integer(0, 5)];
  c.aligned = integer(0, 1);
  for (int64_t l = 0; l < c.num_levels; ++l) {
    // Some empty maps (height or width 0), heights that are not multiples of the band.
    c.heights.push_back(integer(0, 12) == 0 ? 0 : integer(1, 23));
    c.widths.push_back(integer(0, 12) == 0 ? 0 : integer(1, 19));
    c.scales.push_back(std::ldexp(integer(0, 1) ? 1.0 : 0.75, -static_cast<int>(l)));
  }
  // Sometimes more RoIs per bucket than a warp tests at once.
  const int64_t K = n % 10 == 7 ? integer(70, 130) : integer(0, 24);
  const bool bad_indices = n % 5 == 4;
  std::vector<double> r(5 * K);
  std::vector<int64_t> lv(K);
  for (int64_t k = 0; k < K; ++k) {
    lv[k] = integer(0, c.num_levels - 1);
    const double H = static_cast<double>(c.heights[lv[k]]), W = static_cast<double>(c.widths[lv[k]]);
    const double s = c.scales[lv[k]];
    double x1, y1, x2, y2;  // on the feature map, then divided by its scale
    switch (integer(0, 9)) {
      case 4:  // huge, reaching far outside on both sides (adaptive grids of 10^2..10^5)
        x1 = -log_uniform(rng, 1, 5), x2 = W + log_uniform(rng, 1, 5);
        y1 = -log_uniform(rng, 1, 5), y2 = H + log_uniform(rng, 1, 5);
        break;
      case 5:  // inverted (aligned mode samples it with a fixed sampling_ratio)
        x1 = uniform(-2, W + 2), x2 = x1 - uniform(0, 6), y1 = uniform(-2, H + 2), y2 = y1 - uniform(0, 6);
        break;
      case 6:  // zero size
        x1 = x2 = uniform(-1, W + 1), y1 = y2 = uniform(-1, H + 1);
        break;
      case 7:  // wholly outside
        x1 = W + uniform(1, 30), x2 = x1 + uniform(0, 10), y1 = -uniform(5, 30), y2 = y1 + uniform(0, 4);
        break;
      case 8:  // sub-pixel
        x1 = uniform(-1, W), x2 = x1 + uniform(0, 0.4), y1 = uniform(-1, H), y2 = y1 + uniform(0, 0.4);
        break;
      case 9:  // enormous: grids of ~10^6 samples per bin, sample_range at work
        x1 = -log_uniform(rng, 6, 6.5), x2 = log_uniform(rng, 6, 6.5), y1 = -uniform(0, 3), y2 = H + uniform(0, 3);
        if (integer(0, 1)) std::swap(x1, y1), std::swap(x2, y2);
        break;
      default:  // ordinary, partly outside at times
        x1 = uniform(-0.3 * W - 1, 1.1 * W), x2 = x1 + uniform(0, 0.8 * W + 2);
        y1 = uniform(-0.3 * H - 1, 1.1 * H), y2 = y1 + uniform(0, 0.8 * H + 2);
    }
    r[5 * k] = static_cast<double>(integer(0, c.batch - 1)) + (integer(0, 3) == 0 ? uniform(0, 0.99) : 0.0);
    r[5 * k + 1] = x1 / s, r[5 * k + 2] = y1 / s, r[5 * k + 3] = x2 / s, r[5 * k + 4] = y2 / s;
    if (integer(0, 15) == 0) r[5 * k + 1 + integer(0, 3)] = std::numeric_limits<double>::quiet_NaN();
    if (bad_indices && integer(0, 3) == 0) {
      switch (integer(0, 3)) {
        case 0: r[5 * k] = static_cast<double>(c.batch); break;
        case 1: r[5 * k] = -1.0; break;
        case 2: r[5 * k] = std::numeric_limits<double>::quiet_NaN(); break;
        default: lv[k] = integer(0, 1) ? c.num_levels : -1;
      }
      c.indices_in_range = false;
    }
  }
  c.rois = at::tensor(r, at::kDouble).reshape({K, 5}).to(dtype);
  c.levels = at::tensor(lv, at::kLong);
  // The incoming gradient: contiguous, strided (a transposed copy), or stride-0 (expanded).
  const auto opts = at::TensorOptions().dtype(dtype);
  switch (n % 3) {
    case 0: c.grad = at::randn({K, c.channels, c.pooled_h, c.pooled_w}, opts); break;
    case 1: c.grad = at::randn({K, c.pooled_w, c.pooled_h, c.channels}, opts).permute({0, 3, 2, 1}); break;
    default: c.grad = at::randn({1, c.channels, 1, 1}, opts).expand({K, c.channels, c.pooled_h, c.pooled_w});
  }
  return c;
}

// The CPU kernel's additions (roi_align_cpu.cpp): RoI by RoI, bin by bin, over the samples
// sample_range leaves (every sample, for grids it is tested against here), taps in order.
template <typename A>
void reference_trace(const RoIAlignParams& p, std::vector<std::vector<std::vector<Contribution>>>& trace) {
  constexpr int64_t kFullWalk = int64_t{1} << 17;
  auto taps = [](A start, int64_t bin_index, A bin, int64_t grid, int64_t size) {
    int64_t first = 0, last = grid;
    if (grid > kFullWalk) sample_range(start, bin_index, bin, grid, size, first, last);
    std::vector<std::pair<int64_t, AxisTap<A>>> out;
    for (int64_t i = first; i < last; ++i) {
      AxisTap<A> t;
      if (axis_tap(sample_coordinate(start, bin_index, bin, i, grid), size, t)) out.push_back({i, t});
    }
    return out;
  };
  for (int64_t k = 0; k < p.num_rois; ++k) {
    int64_t level;
    const RoIGeometry<A> g = level_roi_geometry<A>(p, k, level);
    if (!g.valid) continue;
    const int64_t H = p.levels[level].height, W = p.levels[level].width;
    for (int64_t ph = 0; ph < p.pooled_height; ++ph) {
      const auto ys = taps(g.start_h, ph, g.bin_h, g.grid_h, H);
      for (int64_t pw = 0; pw < p.pooled_width; ++pw) {
        const auto xs = taps(g.start_w, pw, g.bin_w, g.grid_w, W);
        for (const auto& [iy, ty] : ys)
          for (const auto& [ix, tx] : xs) {
            const int64_t rows[4] = {ty.low, ty.low, ty.high, ty.high}, cols[4] = {tx.low, tx.high, tx.low, tx.high};
            for (int tap = 0; tap < 4; ++tap)
              trace[level][(g.batch * H + rows[tap]) * W + cols[tap]].push_back({k, ph, pw, iy, ix, tap});
          }
      }
    }
  }
}

template <typename A>
void test_band_walk(uint64_t seed) {
  std::mt19937_64 rng(seed);
  at::manual_seed(seed);
  const at::ScalarType dtype = sizeof(A) == 8 ? at::kDouble : at::kFloat;
  const std::string tag = std::string(sizeof(A) == 8 ? "float64" : "float32") + " band walk: ";
  const auto handle = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("fastmask::multi_level_roi_align_backward", "")
                          .typed<MultiLevelBackwardFn>();
  constexpr int kCases = 400;
  int bad_order = 0, bad_bits = 0, bad_bands = 0, cpu_compared = 0;
  std::string first_failure;
  int64_t contributions = 0, samples_walked = 0, samples_needed = 0, multi_chunk = 0, multi_word = 0;
  auto fail = [&](int& counter, int n, const std::string& what) {
    if (counter++ == 0 && first_failure.empty()) first_failure = "case " + std::to_string(n) + ": " + what;
  };
  for (int n = 0; n < kCases; ++n) {
    const BandCase c = random_band_case(rng, dtype, n);
    const int64_t B = c.batch, C = c.channels, L = c.num_levels;
    RoIAlignParams p;
    p.num_levels = static_cast<int>(L);
    for (int64_t l = 0; l < L; ++l) {
      p.levels[l].height = c.heights[l];
      p.levels[l].width = c.widths[l];
      p.levels[l].spatial_scale = c.scales[l];
    }
    p.rois = c.rois.const_data_ptr();
    p.roi_levels = c.levels.const_data_ptr<int64_t>();
    p.num_rois = c.rois.size(0);
    p.batch_size = B;
    p.channels = C;
    p.pooled_height = c.pooled_h;
    p.pooled_width = c.pooled_w;
    p.sampling_ratio = c.sampling_ratio;
    p.aligned = c.aligned;
    p.channels_last = true;
    std::vector<int64_t> roi_order, bucket_begin;
    const at::Tensor rois = c.rois.contiguous(), levels = c.levels.contiguous();
    fastmask_test::bucket_rois_host(rois.const_data_ptr(), rois.scalar_type() == at::kDouble, rois.size(0),
                                    levels.const_data_ptr<int64_t>(), B, L, roi_order, bucket_begin);
    p.roi_order = roi_order.data();
    p.bucket_begin = bucket_begin.data();

    std::vector<std::vector<A>> grads(L);
    std::vector<std::vector<std::vector<Contribution>>> got(L), want(L);
    std::vector<std::vector<int>> owners(L);
    for (int64_t l = 0; l < L; ++l) {
      grads[l].assign(B * c.heights[l] * c.widths[l] * C, A(0));
      got[l].resize(B * c.heights[l] * c.widths[l]);
      want[l].resize(B * c.heights[l] * c.widths[l]);
      owners[l].assign(B * c.heights[l], 0);
    }
    const A* go = c.grad.const_data_ptr<A>();
    const auto gs = c.grad.strides();
    auto grad_out = [&](int64_t k, int64_t ch, int64_t ph, int64_t pw) {
      return go[k * gs[0] + ch * gs[1] + ph * gs[2] + pw * gs[3]];
    };

    // Every block of the launch, thread by thread (as many as the kernel would start: the
    // channels rounded up to warps), each walking its channels of the band.
    const int64_t threads = std::min<int64_t>((C + 31) / 32 * 32, 256);
    const BandTable table = band_table(p);
    for (int64_t block = 0; block < table.num_blocks; ++block) {
      const Band band = band_of_block(table, p, block);
      const int64_t H = band.level >= 0 && band.level < L ? c.heights[band.level] : -1;
      if (H < 0 || band.image < 0 || band.image >= B || band.y0 % kBandRows != 0 || !(band.y0 < band.y1) ||
          band.y1 > H || band.y1 - band.y0 > kBandRows) {
        fail(bad_bands, n, "block " + std::to_string(block) + " got an impossible band");
        continue;
      }
      for (int64_t y = band.y0; y < band.y1; ++y) ++owners[band.level][band.image * H + y];
      const int64_t bucket = band.level * B + band.image;
      const int64_t bucket_size = p.bucket_begin[bucket + 1] - p.bucket_begin[bucket];
      multi_chunk += bucket_size > threads;
      multi_word += threads > 32 && bucket_size > 32;
      const int64_t W = c.widths[band.level];
      A* image = grads[band.level].data() + band.image * H * W * C;
      // The kernel's chunk of RoIs: one per thread, accepted or not by band_roi.
      std::vector<uint32_t> words((threads + 31) / 32);
      auto chunk_masks = [&](int64_t base, int64_t end) -> const uint32_t* {
        std::fill(words.begin(), words.end(), 0u);
        for (int64_t t = 0; t < threads && base + t < end; ++t) {
          RoIGeometry<A> g;
          int64_t ph0, ph1;
          if (band_roi(p, band, p.roi_order[base + t], g, ph0, ph1)) words[t / 32] |= 1u << (t % 32);
        }
        return words.data();
      };
      auto add = [&](const BandSample& sm, int64_t ch, A v1, A v2, A v3, A v4) {
        const bool rows_ok = (!sm.low_in || (sm.y_low >= band.y0 && sm.y_low < band.y1)) &&
                             (!sm.high_in || (sm.y_high >= band.y0 && sm.y_high < band.y1)) &&
                             sm.y_low >= 0 && sm.y_high < H;
        if (!rows_ok || sm.x_low < 0 || sm.x_high >= W || ch < 0 || ch >= C) {
          fail(bad_bands, n, "a band wrote outside its rows");
          return;
        }
        add_sample_taps(image + sm.y_low * W * C + ch, image + sm.y_high * W * C + ch, sm, C, v1, v2, v3, v4);
        if (ch != 0) return;
        const int64_t rows[4] = {sm.y_low, sm.y_low, sm.y_high, sm.y_high};
        const int64_t cols[4] = {sm.x_low, sm.x_high, sm.x_low, sm.x_high};
        for (int tap = 0; tap < 4; ++tap)
          if (tap < 2 ? sm.low_in : sm.high_in)
            got[band.level][(band.image * H + rows[tap]) * W + cols[tap]].push_back(
                {sm.roi, sm.ph, sm.pw, sm.iy, sm.ix, tap});
      };
      for (int64_t thread = 0; thread < threads; ++thread) {
        for_each_band_roi(p, band, threads, chunk_masks, [&](int64_t k) {
          RoIGeometry<A> g;
          int64_t ph0, ph1;
          band_roi(p, band, k, g, ph0, ph1);
          band_roi_backward<A>(p, band, k, g, ph0, ph1, thread, threads, grad_out, add);
          if (thread != 0) return;
          // How tight the clamped ranges are: samples walked vs samples with a tap in the band.
          for (int64_t ph = ph0; ph < ph1; ++ph) {
            int64_t iy0, iy1;
            band_samples(g, ph, H, band.y0, band.y1, iy0, iy1);
            for (int64_t iy = iy0; iy < iy1; ++iy) {
              AxisTap<A> ty;
              ++samples_walked;
              samples_needed += axis_tap(sample_coordinate(g.start_h, ph, g.bin_h, iy, g.grid_h), H, ty) &&
                                ((ty.low >= band.y0 && ty.low < band.y1) || (ty.high >= band.y0 && ty.high < band.y1));
            }
          }
        });
      }
    }
    for (int64_t l = 0; l < L; ++l)
      for (const int o : owners[l])
        if (o != 1) fail(bad_bands, n, "a row of level " + std::to_string(l) + " has " + std::to_string(o) + " owners");

    reference_trace<A>(p, want);
    for (int64_t l = 0; l < L; ++l)
      for (size_t e = 0; e < want[l].size(); ++e) {
        contributions += static_cast<int64_t>(want[l][e].size());
        if (got[l][e] != want[l][e]) {
          fail(bad_order, n, "level " + std::to_string(l) + " element " + std::to_string(e) + ": band walk adds " +
                                 std::to_string(got[l][e].size()) + " contributions, the CPU kernel " +
                                 std::to_string(want[l][e].size()) + " (or in another order)");
          break;
        }
      }

    if (!c.indices_in_range) continue;  // the CPU op raises IndexError for those
    ++cpu_compared;
    std::vector<c10::SymInt> hs, ws;
    for (int64_t l = 0; l < L; ++l) hs.emplace_back(c.heights[l]), ws.emplace_back(c.widths[l]);
    const std::vector<at::Tensor> cpu =
        handle.call(c.grad, c.rois, c.levels, c.scales, hs, ws, c10::SymInt(B), c10::SymInt(C), c.pooled_h,
                    c.pooled_w, c.sampling_ratio, c.aligned, /*channels_last=*/true, /*deterministic=*/false);
    for (int64_t l = 0; l < L; ++l) {
      const at::Tensor g = cpu[l].contiguous(at::MemoryFormat::ChannelsLast);
      if (g.numel() != static_cast<int64_t>(grads[l].size()) ||
          (g.numel() > 0 && std::memcmp(g.const_data_ptr<A>(), grads[l].data(), grads[l].size() * sizeof(A)) != 0)) {
        fail(bad_bits, n, "level " + std::to_string(l) + " differs from the CPU backward op");
        break;
      }
    }
  }
  check(bad_bands == 0, tag + "every row of every map owned by exactly one band, writes only there");
  check(bad_order == 0, tag + "per gradient element, the CPU kernel's contributions in its order (" +
                            std::to_string(kCases) + " random cases, " + std::to_string(contributions) +
                            " contributions)");
  check(bad_bits == 0, tag + "gradients equal the CPU backward op's bit for bit (" + std::to_string(cpu_compared) +
                           " cases with in-range indices)");
  if (!first_failure.empty()) std::printf("[info] %sfirst failure: %s\n", tag.c_str(), first_failure.c_str());
  std::printf("[info] %sclamped ranges walk %lld samples for %lld with a tap in the band; %lld blocks test their "
              "RoIs in several chunks, %lld with several warps\n",
              tag.c_str(), static_cast<long long>(samples_walked), static_cast<long long>(samples_needed),
              static_cast<long long>(multi_chunk), static_cast<long long>(multi_word));
}

}  // namespace

int main() {
  const char* seed_env = std::getenv("FASTMASK_TEST_SEED");
  const uint64_t seed = seed_env ? std::strtoull(seed_env, nullptr, 10) : 20240607;
  std::printf("[info] seed %llu (FASTMASK_TEST_SEED)\n", static_cast<unsigned long long>(seed));
  test_dispatcher_roi_align();
  test_sample_bounds<float>(seed);
  test_sample_bounds<double>(seed + 1);
  test_degenerate_geometry<float>();
  test_degenerate_geometry<double>();
  test_band_walk<float>(seed + 2);
  test_band_walk<double>(seed + 3);
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
