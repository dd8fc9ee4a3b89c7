// CPU kernels of the RPN ops: each op of rpn_math.h over its elements in a
// parallel loop.
#include "rpn_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>

#include "rpn_math.h"

namespace fastmask {
namespace {

// Arithmetic of storage type T_ on the CPU: fp16/bf16 compute in float and
// round every result back, as c10::Half / c10::BFloat16 tensor ops do.
template <typename T_, typename V_ = T_>
struct HostArith {
  using T = T_;
  using V = V_;
  static V load(T v) { return static_cast<V>(v); }
  static T store(V v) { return static_cast<T>(v); }
  static V round(V v) { return static_cast<V>(static_cast<T>(v)); }
  static V exp(V v) { return std::exp(v); }
  static V log(V v) { return std::log(v); }
  static V div_scalar(V v, double s) { return round(v / static_cast<V>(s)); }
};

template <typename T>
struct Arith : HostArith<T> {};
template <>
struct Arith<c10::Half> : HostArith<c10::Half, float> {};
template <>
struct Arith<c10::BFloat16> : HostArith<c10::BFloat16, float> {};

template <typename Op, typename Params>
void run(const Params& p) {
  at::parallel_for(0, Op::size(p), 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) Op::apply(p, i);
  });
}

template <template <typename> class Op, typename Params>
void for_each(const Params& p) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return run<Op<Arith<float>>>(p);
    case ScalarKind::kFloat64: return run<Op<Arith<double>>>(p);
    case ScalarKind::kFloat16: return run<Op<Arith<c10::Half>>>(p);
    case ScalarKind::kBFloat16: return run<Op<Arith<c10::BFloat16>>>(p);
  }
}

}  // namespace

void grid_anchors_cpu(const AnchorParams& p) { for_each<rpn::AnchorOp>(p); }
void decode_boxes_cpu(const BoxCodingParams& p) { for_each<rpn::DecodeOp>(p); }
void encode_boxes_cpu(const BoxCodingParams& p) { for_each<rpn::EncodeOp>(p); }
void propose_cpu(const ProposalParams& p) { for_each<rpn::ProposeOp>(p); }

}  // namespace fastmask
