// The IoU threshold in the type the IoU is compared in, shared by the CPU
// kernel and the CUDA launcher so both decide every pair alike.
//
// torchvision compares the IoU `ovr`, computed in the box dtype, as
// double(ovr) > threshold. threshold_in<T>(threshold) is the t in T such that
//     ovr > t  <=>  double(ovr) > threshold   for every ovr in T (NaN and +-inf included),
// i.e. the largest T value not above the threshold (rounding down), so the
// per-pair test is one compare in T. fp16/bf16 IoUs are computed in float and
// rounded to their type; every such value is a float, so they compare with
// threshold_in<float>. Plain C++ (no ATen): the .cu launcher includes it.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>

namespace fastmask {

template <typename T>  // float or double
inline T threshold_in(double threshold) {
  static_assert(std::is_floating_point_v<T>, "threshold_in: float or double");
  using limits = std::numeric_limits<T>;
  if (std::isnan(threshold)) return limits::quiet_NaN();  // nothing exceeds NaN on either side
  if (threshold == std::numeric_limits<double>::infinity()) return limits::infinity();
  if (threshold >= static_cast<double>(limits::max())) return limits::max();  // only +inf exceeds it
  if (threshold < -static_cast<double>(limits::max())) return -limits::infinity();  // all but -inf exceed it
  T t = static_cast<T>(threshold);  // in range: defined, rounded to nearest
  if (static_cast<double>(t) > threshold) t = std::nextafter(t, -limits::infinity());
  return t;
}

}  // namespace fastmask
