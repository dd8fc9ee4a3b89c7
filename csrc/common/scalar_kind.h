// The floating-point types the kernels take, as plain data (no ATen), so that
// params structs shared with .cu files can name them.
#pragma once

namespace fastmask {

enum class ScalarKind : int { kFloat32, kFloat64, kFloat16, kBFloat16 };

}  // namespace fastmask
