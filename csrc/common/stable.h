// What the bindings use of PyTorch: its stable ABI only (torch/csrc/stable, torch/headeronly),
// so that one build of the op library loads under every torch from TORCH_TARGET_VERSION on.
// Also: argument checks that raise the right Python exception class, and message formatting.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastmask {

using torch::stable::Tensor;
using torch::headeronly::ScalarType;
using Device = torch::stable::Device;
using DeviceType = torch::headeronly::DeviceType;
using MemoryFormat = torch::headeronly::MemoryFormat;
using IntArrayRef = torch::headeronly::HeaderOnlyArrayRef<int64_t>;
using DoubleArrayRef = torch::headeronly::HeaderOnlyArrayRef<double>;
using TensorList = std::vector<Tensor>;

// ---- errors -----------------------------------------------------------------------------------
// Only std::out_of_range crosses every torch release as a typed Python exception (IndexError);
// every other C++ exception becomes a RuntimeError. So value and type errors carry their class
// as the first word of the message ("ValueError: fastmask.nms: ..."), and fastmask's Python
// wrappers raise that class (fastmask/ops/_checks.py, call_op).
enum class ErrorKind { kRuntime, kValue, kType, kIndex };

[[noreturn]] inline void throw_error(ErrorKind kind, const std::string& message) {
  switch (kind) {
    case ErrorKind::kIndex: throw std::out_of_range(message);
    case ErrorKind::kValue: throw std::runtime_error("ValueError: " + message);
    case ErrorKind::kType: throw std::runtime_error("TypeError: " + message);
    case ErrorKind::kRuntime: break;
  }
  throw std::runtime_error(message);
}

// ---- formatting, as torch prints these in its messages -----------------------------------------
struct Shape {
  IntArrayRef sizes;
};
inline Shape shape(const Tensor& t) { return {t.sizes()}; }

inline std::ostream& operator<<(std::ostream& out, const Shape& s) {
  out << '[';
  for (size_t i = 0; i < s.sizes.size(); ++i) out << (i ? ", " : "") << s.sizes[i];
  return out << ']';
}

inline std::ostream& operator<<(std::ostream& out, const Device& d) {
  if (d.is_cpu()) return out << "cpu";
  out << (d.is_cuda() ? "cuda" : "device type " + std::to_string(static_cast<int>(d.type())));
  if (d.has_index()) out << ':' << static_cast<int>(d.index());
  return out;
}

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

}  // namespace fastmask

#define FASTMASK_CHECK_KIND(kind, cond, ...)                                       \
  do {                                                                             \
    if (!(cond)) ::fastmask::throw_error((kind), ::fastmask::str(__VA_ARGS__));   \
  } while (0)
// RuntimeError, ValueError, TypeError, IndexError in Python.
#define FASTMASK_CHECK(cond, ...) FASTMASK_CHECK_KIND(::fastmask::ErrorKind::kRuntime, cond, __VA_ARGS__)
#define FASTMASK_CHECK_VALUE(cond, ...) FASTMASK_CHECK_KIND(::fastmask::ErrorKind::kValue, cond, __VA_ARGS__)
#define FASTMASK_CHECK_TYPE(cond, ...) FASTMASK_CHECK_KIND(::fastmask::ErrorKind::kType, cond, __VA_ARGS__)
#define FASTMASK_CHECK_INDEX(cond, ...) FASTMASK_CHECK_KIND(::fastmask::ErrorKind::kIndex, cond, __VA_ARGS__)

namespace fastmask {

// ---- tensor properties the stable Tensor does not have -----------------------------------------
// ATen's isFloatingType.
inline bool is_floating(ScalarType t) {
  switch (t) {
    case ScalarType::Float:
    case ScalarType::Double:
    case ScalarType::Half:
    case ScalarType::BFloat16:
    case ScalarType::Float8_e5m2:
    case ScalarType::Float8_e4m3fn:
    case ScalarType::Float8_e5m2fnuz:
    case ScalarType::Float8_e4m3fnuz:
    case ScalarType::Float8_e8m0fnu:
      return true;
    default:
      return false;
  }
}

inline bool is_integral(ScalarType t, bool include_bool) {
  switch (t) {
    case ScalarType::Byte:
    case ScalarType::Char:
    case ScalarType::Short:
    case ScalarType::Int:
    case ScalarType::Long:
    case ScalarType::UInt16:
    case ScalarType::UInt32:
    case ScalarType::UInt64:
      return true;
    case ScalarType::Bool:
      return include_bool;
    default:
      return false;
  }
}

// A tensor's dtype as its code, the ScalarType's value: also for quantized tensors, which the
// stable ABI's conversion to ScalarType (Tensor::scalar_type) does not know.
inline int32_t dtype_code(const Tensor& t) {
  int32_t code = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_dtype(t.get(), &code));
  return code;
}
inline bool has_dtype(const Tensor& t, ScalarType s) { return dtype_code(t) == static_cast<int32_t>(s); }
inline bool is_quantized(const Tensor& t) { return torch::headeronly::isQIntType(static_cast<ScalarType>(dtype_code(t))); }
// The dtype's name, as torch prints it ("Float", "QUInt8").
inline const char* dtype_name(const Tensor& t) { return torch::headeronly::toString(static_cast<ScalarType>(dtype_code(t))); }

// Same device (type and index), as ATen's Device == (a tensor's device always has an index
// except on the CPU).
inline bool same_device(const Tensor& a, const Tensor& b) { return a.device() == b.device(); }

// ATen's channels_last contiguity of a 4-D tensor (compute_channels_last_contiguous_2d):
// strides in C, W, H, N order, size-1 dimensions ignored.
inline bool is_channels_last_contiguous(IntArrayRef sizes, IntArrayRef strides) {
  if (sizes.size() != 4) return false;
  int64_t expected = 1;
  for (const int d : {1, 3, 2, 0}) {
    if (sizes[d] == 1) continue;
    if (strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}
inline bool is_channels_last_contiguous(const Tensor& t) {
  return is_channels_last_contiguous(t.sizes(), t.strides());
}

// The kernels' layout rule: channels_last when the tensor is, and is not also plain contiguous.
inline bool is_channels_last(const Tensor& t) { return !t.is_contiguous() && is_channels_last_contiguous(t); }

inline MemoryFormat memory_format(bool channels_last) {
  return channels_last ? MemoryFormat::ChannelsLast : MemoryFormat::Contiguous;
}

inline size_t nbytes(const Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

// Makes `t`'s device current for the scope (CUDA); a no-op on the CPU.
class DeviceScope {
 public:
  explicit DeviceScope(const Tensor& t) {
    if (t.is_cuda()) guard_.emplace(t.get_device_index());
  }

 private:
  std::optional<torch::stable::accelerator::DeviceGuard> guard_;
};

}  // namespace fastmask
