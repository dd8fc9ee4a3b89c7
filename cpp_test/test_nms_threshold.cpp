// C++ test of csrc/nms/nms_threshold.h, built and run by CMakeLists.txt (ctest); non-zero on
// failure. The NMS kernels (CPU and CUDA) compare each IoU in its own type with
// threshold_in<T>(threshold), which must decide every IoU as torchvision's double(ovr) >
// threshold does:
//  1. every fp16 and bf16 value (their IoUs are compared as floats) against thresholds at,
//     next to and between all of them;
//  2. float and double: the converted threshold is the largest value not above the threshold,
//     for thresholds around random values of every magnitude, and direct comparisons agree.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nms/nms_threshold.h"

namespace {

using fastmask::threshold_in;

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("[%s] %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

const double kInf = std::numeric_limits<double>::infinity();

// Thresholds at each value, its double neighbours, the midpoints between neighbours, and the
// special ones (signed zeros, infinities, NaN, the ends of the float and double ranges).
std::vector<double> critical_thresholds(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  std::vector<double> out;
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    out.insert(out.end(), {v, std::nextafter(v, kInf), std::nextafter(v, -kInf)});
    if (i + 1 < values.size()) out.push_back(v / 2 + values[i + 1] / 2);
  }
  const double flt_max = std::numeric_limits<float>::max(), dbl_max = std::numeric_limits<double>::max();
  for (double s : {0.0, -0.0, 0.5, 1.0, kInf, -kInf, std::nan(""), 1e300, -1e300, dbl_max, -dbl_max, 5e-324, -5e-324,
                   flt_max, -flt_max, std::nextafter(flt_max, kInf), -std::nextafter(flt_max, kInf), 1e-45, 7e-46,
                   -7e-46, 1.5e-45})
    out.push_back(s);
  return out;
}

// For every threshold, the values the converted comparison passes are those the double one does.
template <typename H>
void check_half_type(const char* name) {
  std::vector<float> values;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float v = static_cast<float>(H(static_cast<uint16_t>(bits), typename H::from_bits_t()));
    if (!std::isnan(v)) values.push_back(v);
  }
  std::sort(values.begin(), values.end());
  const std::vector<double> thresholds = critical_thresholds(std::vector<double>(values.begin(), values.end()));
  int64_t bad = 0;
  for (const double t : thresholds) {
    const float converted = threshold_in<float>(t);
    const auto passed_float = values.end() - std::upper_bound(values.begin(), values.end(), converted);
    const auto passed_double =
        std::count_if(values.begin(), values.end(), [t](float v) { return static_cast<double>(v) > t; });
    bad += passed_float != passed_double;
  }
  check(bad == 0, std::string("every ") + name + " IoU decided as in double, " + std::to_string(thresholds.size()) +
                      " thresholds (" + std::to_string(bad) + " wrong)");
}

// threshold_in<T>(t) is the largest T not above t: then ovr > it <=> double(ovr) > t for every ovr.
template <typename T, typename Bits>
void check_dense(const char* name) {
  std::mt19937_64 rng(0);
  std::vector<double> values;
  for (int i = 0; i < 200000; ++i) {
    const Bits bits = static_cast<Bits>(rng());
    T v;
    std::memcpy(&v, &bits, sizeof v);
    if (std::isfinite(v)) values.push_back(static_cast<double>(v));
  }
  std::vector<double> thresholds = critical_thresholds(values);
  std::uniform_real_distribution<double> uniform(-2, 2);
  for (int i = 0; i < 50000; ++i) thresholds.push_back(uniform(rng));
  int64_t bad = 0;
  for (const double t : thresholds) {
    const T converted = threshold_in<T>(t);
    if (std::isnan(t)) {
      bad += !std::isnan(converted);
      continue;
    }
    const T up = std::nextafter(converted, std::numeric_limits<T>::infinity());
    bad += !(static_cast<double>(converted) <= t) || !(static_cast<double>(up) > t || converted == up);
    for (const T x : {static_cast<T>(values[bad % values.size()]), converted, up, T(0), T(-0.0),
                      std::numeric_limits<T>::infinity(), -std::numeric_limits<T>::infinity()})
      bad += (x > converted) != (static_cast<double>(x) > t);
  }
  check(bad == 0, std::string(name) + ": converted threshold is the largest value not above it, " +
                      std::to_string(thresholds.size()) + " thresholds (" + std::to_string(bad) + " wrong)");
}

}  // namespace

int main() {
  check_half_type<c10::Half>("fp16");
  check_half_type<c10::BFloat16>("bf16");
  check_dense<float, uint32_t>("float32");
  check_dense<double, uint64_t>("float64");
  if (failures) std::printf("%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
