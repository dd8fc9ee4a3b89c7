// ATen dtype <-> ScalarKind, for the bindings and CPU kernels.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "common/scalar_kind.h"

namespace fastmask {

// `what` names the op and argument in the error, e.g. "fastmask.nms: boxes".
inline ScalarKind scalar_kind(c10::ScalarType t, const char* what) {
  switch (t) {
    case c10::ScalarType::Float: return ScalarKind::kFloat32;
    case c10::ScalarType::Double: return ScalarKind::kFloat64;
    case c10::ScalarType::Half: return ScalarKind::kFloat16;
    case c10::ScalarType::BFloat16: return ScalarKind::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, what, " must be float32, float64, float16 or bfloat16, got ", t);
  }
}

inline c10::ScalarType aten_scalar_type(ScalarKind kind) {
  switch (kind) {
    case ScalarKind::kFloat64: return c10::ScalarType::Double;
    case ScalarKind::kFloat16: return c10::ScalarType::Half;
    case ScalarKind::kBFloat16: return c10::ScalarType::BFloat16;
    case ScalarKind::kFloat32: break;
  }
  return c10::ScalarType::Float;
}

}  // namespace fastmask
