// Calls fastmask::roi_align (CPU) through the PyTorch dispatcher, as a libtorch
// user would, and checks it against bilinear samples computed here by hand.
// Built and run by CMakeLists.txt (ctest); returns non-zero on any failure.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace {

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

}  // namespace

int main() {
  using RoIAlignFn = at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t,
                                int64_t, bool, bool);
  std::optional<c10::TypedOperatorHandle<RoIAlignFn>> handle;
  try {
    handle = c10::Dispatcher::singleton().findSchemaOrThrow("fastmask::roi_align", "").typed<RoIAlignFn>();
  } catch (const c10::Error& e) {
    std::printf("[FAIL] fastmask::roi_align is not registered (is libfastmask_ops loaded?): %s\n",
                e.what_without_backtrace());
    return 1;
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
    } catch (const c10::Error& e) {
      check(false, tag + "roi_align raised " + e.what_without_backtrace());
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

  // A RoI whose batch index (5) is outside the batch of 1: the CPU backend raises.
  {
    const at::Tensor bad = at::tensor({5.0, 0.0, 0.0, 2.0, 2.0}, at::kFloat).reshape({1, 5});
    bool threw = false, index_error = false;
    std::string msg;
    try {
      op.call(input, bad, 1.0, P, P, 2, true, false);
    } catch (const c10::IndexError& e) {
      threw = index_error = true;
      msg = e.what_without_backtrace();
    } catch (const c10::Error& e) {
      threw = true;
      msg = e.what_without_backtrace();
    }
    check(threw, "batch index 5 on a batch of 1 throws c10::Error" +
                     std::string(index_error ? " (c10::IndexError)" : "") +
                     (msg.empty() ? "" : ": " + msg.substr(0, msg.find('\n'))));
  }

  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
