// torch dtypes <-> ScalarKind and the C++ types of the CPU kernels.
#pragma once

#include "common/stable.h"
#include "common/scalar_kind.h"

namespace fastmask {

// `what` names the op and argument in the error, e.g. "fastmask.nms: boxes".
inline ScalarKind scalar_kind(ScalarType t, const char* what) {
  switch (t) {
    case ScalarType::Float: return ScalarKind::kFloat32;
    case ScalarType::Double: return ScalarKind::kFloat64;
    case ScalarType::Half: return ScalarKind::kFloat16;
    case ScalarType::BFloat16: return ScalarKind::kBFloat16;
    default:
      throw_error(ErrorKind::kType, str(what, " must be float32, float64, float16 or bfloat16, got ", t));
  }
}

inline ScalarType torch_scalar_type(ScalarKind kind) {
  switch (kind) {
    case ScalarKind::kFloat64: return ScalarType::Double;
    case ScalarKind::kFloat16: return ScalarType::Half;
    case ScalarKind::kBFloat16: return ScalarType::BFloat16;
    case ScalarKind::kFloat32: break;
  }
  return ScalarType::Float;
}

template <typename T>
constexpr ScalarType scalar_type_of();
template <>
constexpr ScalarType scalar_type_of<float>() { return ScalarType::Float; }
template <>
constexpr ScalarType scalar_type_of<double>() { return ScalarType::Double; }
template <>
constexpr ScalarType scalar_type_of<c10::Half>() { return ScalarType::Half; }
template <>
constexpr ScalarType scalar_type_of<c10::BFloat16>() { return ScalarType::BFloat16; }

}  // namespace fastmask
