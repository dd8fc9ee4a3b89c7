// ATen operators the bindings need beyond torch/csrc/stable/ops.h, called through the stable
// ABI's dispatcher entry point (torch_call_dispatcher): the same kernels, sync-free on the
// tensors' device, as the ATen calls they replace.
//
// Every call passes the complete argument list of the operator's schema as of
// TORCH_TARGET_VERSION (torch 2.11), and says so: torch adapts the stack for operators whose
// schema changed since. The dispatcher cannot pass a Scalar argument, so operators that take
// one are called in their Tensor overloads with a 0-dim tensor (`scalar`), which ATen's
// TensorIterator reads as the same scalar.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <utility>

#include "common/stable.h"

#ifndef TORCH_TARGET_VERSION
#error "fastmask's op library builds against PyTorch's stable ABI: define TORCH_TARGET_VERSION"
#endif

namespace fastmask::aten {

// Calls `name.overload` with `args` (as the schema's types: int64_t for int, double for float,
// bool, Tensor, std::optional, std::vector / IntArrayRef for lists) and returns the stack with
// its first `Returns` entries holding the results.
template <size_t Returns, typename... Args>
std::array<StableIValue, (Returns > sizeof...(Args) ? Returns : sizeof...(Args))> call(const char* name,
                                                                                     const char* overload,
                                                                                     const Args&... args) {
  std::array<StableIValue, (Returns > sizeof...(Args) ? Returns : sizeof...(Args))> stack{
      torch::stable::detail::from(args)...};
  // torch before 2.15 keeps the failure's message to itself (it may print it): name the operator.
  FASTMASK_CHECK(torch_call_dispatcher(name, overload, stack.data(), TORCH_TARGET_VERSION) == AOTI_TORCH_SUCCESS,
                 "fastmask: ATen's ", name, overload[0] ? "." : "", overload, " failed, called by a fastmask op");
  return stack;
}

template <typename... Args>
Tensor tensor_op(const char* name, const char* overload, const Args&... args) {
  return torch::stable::detail::to<Tensor>(call<1>(name, overload, args...)[0]);
}

template <typename... Args>
std::pair<Tensor, Tensor> tensor_pair_op(const char* name, const char* overload, const Args&... args) {
  const auto stack = call<2>(name, overload, args...);
  return {torch::stable::detail::to<Tensor>(stack[0]), torch::stable::detail::to<Tensor>(stack[1])};
}

// ---- creation -----------------------------------------------------------------------------------
inline Tensor empty(IntArrayRef sizes, ScalarType dtype, const Device& device,
                    MemoryFormat format = MemoryFormat::Contiguous) {
  return torch::stable::empty(sizes, dtype, std::nullopt, device, std::nullopt, format);
}
inline Tensor full(IntArrayRef sizes, double value, ScalarType dtype, const Device& device) {
  return torch::stable::full(sizes, value, dtype, std::nullopt, device);
}
inline Tensor zeros(IntArrayRef sizes, ScalarType dtype, const Device& device,
                    MemoryFormat format = MemoryFormat::Contiguous) {
  Tensor t = empty(sizes, dtype, device, format);
  torch::stable::zero_(t);
  return t;
}
// ATen's empty_like: `t`'s sizes, dtype and device, its strides where it is dense (preserve_format).
inline Tensor empty_like(const Tensor& t) { return torch::stable::empty_like(t); }
// A 0-dim CPU tensor: the Scalar argument of ATen's tensor-scalar operators. On the CPU its
// value takes part in type promotion as a Python number does (a 0-dim operand never widens a
// dimensioned one of its category), and CUDA kernels read it from the host, as a Scalar.
inline Tensor scalar(double value, ScalarType dtype) {
  return torch::stable::full({}, value, dtype, std::nullopt, Device(DeviceType::CPU));
}
// A 0-dim tensor on `device`, for operators that want their operands on one device (integers:
// exact whatever the path).
inline Tensor scalar(double value, ScalarType dtype, const Device& device) {
  return torch::stable::full({}, value, dtype, std::nullopt, device);
}
// [0, 1, ..., n - 1] as int64 on `device`, computed there (arange takes Scalars): the cumulative
// sum of [0, 1, 1, ...].
inline Tensor arange(int64_t n, const Device& device) {
  Tensor steps = full({n}, 1.0, ScalarType::Long, device);
  if (n > 0) {
    Tensor first = torch::stable::narrow(steps, 0, 0, 1);
    torch::stable::zero_(first);
  }
  return tensor_op("aten::cumsum", "", steps, int64_t{0}, std::optional<ScalarType>());
}

// ---- conversion and layout ----------------------------------------------------------------------
inline Tensor to(const Tensor& t, ScalarType dtype) { return torch::stable::to(t, dtype); }
inline Tensor to(const Tensor& t, const Device& device) { return torch::stable::to(t, device); }
inline Tensor contiguous(const Tensor& t, MemoryFormat format = MemoryFormat::Contiguous) {
  return torch::stable::contiguous(t, format);
}
inline Tensor select(const Tensor& t, int64_t dim, int64_t index) { return torch::stable::select(t, dim, index); }
inline Tensor narrow(const Tensor& t, int64_t dim, int64_t start, int64_t length) {
  return torch::stable::narrow(const_cast<Tensor&>(t), dim, start, length);
}
inline Tensor unsqueeze(const Tensor& t, int64_t dim) { return torch::stable::unsqueeze(t, dim); }
inline Tensor flatten(const Tensor& t) { return torch::stable::flatten(t); }
inline Tensor reshape(const Tensor& t, IntArrayRef shape) { return torch::stable::reshape(t, shape); }
inline Tensor expand(const Tensor& t, IntArrayRef sizes) {
  return tensor_op("aten::expand", "", t, sizes, false);
}
inline Tensor permute(const Tensor& t, IntArrayRef dims) { return tensor_op("aten::permute", "", t, dims); }
inline Tensor repeat(const Tensor& t, IntArrayRef repeats) { return tensor_op("aten::repeat", "", t, repeats); }
inline Tensor cat(const TensorList& tensors, int64_t dim) { return tensor_op("aten::cat", "", tensors, dim); }
inline Tensor stack(const TensorList& tensors, int64_t dim) { return tensor_op("aten::stack", "", tensors, dim); }
inline Tensor roll(const Tensor& t, int64_t shift, int64_t dim) {
  const int64_t shifts[1] = {shift}, dims[1] = {dim};
  return tensor_op("aten::roll", "", t, IntArrayRef(shifts), IntArrayRef(dims));
}

// ---- indexing -----------------------------------------------------------------------------------
inline Tensor gather(const Tensor& t, int64_t dim, const Tensor& index) {
  return tensor_op("aten::gather", "", t, dim, index, false);
}
// out-of-place scatter of `src` into `t` along `dim`
inline Tensor scatter(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& src) {
  return tensor_op("aten::scatter", "src", t, dim, index, src);
}
// (values, indices); stable: equal values keep their order.
inline std::pair<Tensor, Tensor> sort(const Tensor& t, int64_t dim, bool descending) {
  return tensor_pair_op("aten::sort", "stable", t, std::optional<bool>(true), dim, descending);
}
inline std::pair<Tensor, Tensor> topk(const Tensor& t, int64_t k, int64_t dim) {
  return tensor_pair_op("aten::topk", "", t, k, dim, true, true);
}
inline std::pair<Tensor, Tensor> cummax(const Tensor& t, int64_t dim) {
  return tensor_pair_op("aten::cummax", "", t, dim);
}
inline Tensor cumsum(const Tensor& t, int64_t dim) {
  return tensor_op("aten::cumsum", "", t, dim, std::optional<ScalarType>());
}
// For each value of `values`, the first index of `sorted` (1-D, ascending) whose entry is not less.
inline Tensor searchsorted(const Tensor& sorted, const Tensor& values) {
  return tensor_op("aten::searchsorted", "Tensor", sorted, values, false, false, std::optional<std::string>(),
                   std::optional<Tensor>());
}

// ---- elementwise -------------------------------------------------------------------------------
inline Tensor where(const Tensor& condition, const Tensor& self, const Tensor& other) {
  return tensor_op("aten::where", "self", condition, self, other);
}
// a + b and a - b of floating tensors: the dispatcher cannot pass add's Scalar alpha, but the
// stable ABI has subtract, and ATen's sub with alpha -1 is its add, bit for bit.
inline Tensor add(const Tensor& a, const Tensor& b) { return torch::stable::subtract(a, b, -1.0); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return torch::stable::subtract(a, b, 1.0); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return tensor_op("aten::mul", "Tensor", a, b); }
inline Tensor remainder(const Tensor& a, const Tensor& b) { return tensor_op("aten::remainder", "Tensor", a, b); }
inline Tensor eq(const Tensor& a, const Tensor& b) { return tensor_op("aten::eq", "Tensor", a, b); }
inline Tensor ne(const Tensor& a, const Tensor& b) { return tensor_op("aten::ne", "Tensor", a, b); }
inline Tensor lt(const Tensor& a, const Tensor& b) { return tensor_op("aten::lt", "Tensor", a, b); }
inline Tensor gt(const Tensor& a, const Tensor& b) { return tensor_op("aten::gt", "Tensor", a, b); }
inline Tensor ge(const Tensor& a, const Tensor& b) { return tensor_op("aten::ge", "Tensor", a, b); }
inline Tensor logical_and(const Tensor& a, const Tensor& b) { return tensor_op("aten::logical_and", "", a, b); }
inline Tensor logical_or(const Tensor& a, const Tensor& b) { return tensor_op("aten::logical_or", "", a, b); }
inline Tensor logical_not(const Tensor& a) { return tensor_op("aten::logical_not", "", a); }
// a & b, a | b (bool or integer tensors).
inline Tensor bitwise_and(const Tensor& a, const Tensor& b) { return tensor_op("aten::bitwise_and", "Tensor", a, b); }
inline Tensor bitwise_or(const Tensor& a, const Tensor& b) { return tensor_op("aten::bitwise_or", "Tensor", a, b); }
inline Tensor trunc(const Tensor& a) { return tensor_op("aten::trunc", "", a); }
inline Tensor sigmoid(const Tensor& a) { return tensor_op("aten::sigmoid", "", a); }
inline Tensor isfinite(const Tensor& a) { return tensor_op("aten::isfinite", "", a); }
inline Tensor clamp(const Tensor& a, const std::optional<Tensor>& lo, const std::optional<Tensor>& hi) {
  return tensor_op("aten::clamp", "Tensor", a, lo, hi);
}
inline Tensor nan_to_num(const Tensor& a, double nan) {
  return tensor_op("aten::nan_to_num", "", a, std::optional<double>(nan), std::optional<double>(),
                   std::optional<double>());
}
inline Tensor masked_fill(const Tensor& a, const Tensor& mask, const Tensor& value) {
  return tensor_op("aten::masked_fill", "Tensor", a, mask, value);
}
// In place, with torch's own CPU implementation of exp/log (see rpn_cpu.cpp).
inline void exp_(const Tensor& a) { (void)tensor_op("aten::exp_", "", a); }
inline void log_(const Tensor& a) { (void)tensor_op("aten::log_", "", a); }

// ---- reductions ---------------------------------------------------------------------------------
inline Tensor sum(const Tensor& a, int64_t dim) {
  const int64_t dims[1] = {dim};
  return torch::stable::sum(a, IntArrayRef(dims));
}
// a + b of integer tensors of one shape (subtract's floating alpha is refused for integers).
inline Tensor add_integers(const Tensor& a, const Tensor& b) { return sum(stack({a, b}, 0), 0); }
inline Tensor all(const Tensor& a, int64_t dim, bool keepdim) { return tensor_op("aten::all", "dim", a, dim, keepdim); }

// ---- quantized tensors ----------------------------------------------------------------------------
inline double q_scale(const Tensor& t) { return torch::stable::detail::to<double>(call<1>("aten::q_scale", "", t)[0]); }
inline int64_t q_zero_point(const Tensor& t) {
  return torch::stable::detail::to<int64_t>(call<1>("aten::q_zero_point", "", t)[0]);
}
inline Tensor int_repr(const Tensor& t) { return tensor_op("aten::int_repr", "", t); }

}  // namespace fastmask::aten
