// CPU kernels of the RPN ops: each op of rpn_math.h over its elements in a
// parallel loop; the ops with exp or log run in two passes around torch's own
// exp_/log_ (rpn::Pass), whose results depend on the library code torch runs on
// this CPU.
#include "rpn_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/parallel.h"
#include "common/scalar_kind_torch.h"
#include "common/stable_aten.h"
#include "nms/nms_cpu.h"
#include "rpn_math.h"
#include "rpn_registration.h"

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
  parallel_for(0, Op::size(p), 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) Op::apply(p, i);
  });
}

template <template <typename, rpn::Pass> class Op, rpn::Pass P, typename Params>
void for_each(const Params& p) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return run<Op<Arith<float>, P>>(p);
    case ScalarKind::kFloat64: return run<Op<Arith<double>, P>>(p);
    case ScalarKind::kFloat16: return run<Op<Arith<c10::Half>, P>>(p);
    case ScalarKind::kBFloat16: return run<Op<Arith<c10::BFloat16>, P>>(p);
  }
}

// The op's arguments of exp/log into a scratch tensor, torch's exp_/log_ on it, then the rest.
template <template <typename, rpn::Pass> class Op, typename Params>
void with_torch_transcendentals(Params p) {
  using Float = Op<Arith<float>, rpn::Pass::kInline>;
  const Tensor scratch = aten::empty({Float::size(p), 2}, torch_scalar_type(p.dtype), Device(DeviceType::CPU));
  p.transcendental = scratch.mutable_data_ptr();
  for_each<Op, rpn::Pass::kArguments>(p);
  if (Float::kLog)
    aten::log_(scratch);
  else
    aten::exp_(scratch);
  for_each<Op, rpn::Pass::kFinish>(p);
}

// Anchors row by row (level, y) without per-element index arithmetic, for the first
// image; the other images' anchors are copies of it.
template <typename A>
void anchor_rows(const AnchorParams& p) {
  using T = typename A::T;
  std::vector<int64_t> row_start(p.num_levels + 1, 0);
  for (int l = 0; l < p.num_levels; ++l) row_start[l + 1] = row_start[l] + p.levels[l].height;
  T* first = static_cast<T*>(p.anchors);
  parallel_for(0, row_start[p.num_levels], 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int l = rpn::level_of(row_start.data(), p.num_levels, r);
      const AnchorGrid& g = p.levels[l];
      const int64_t y = r - row_start[l];
      T* out = first + (p.level_start[l] + y * g.width * g.cells) * 4;
      for (int64_t x = 0; x < g.width; ++x) {
        for (int64_t a = 0; a < g.cells; ++a, out += 4) {
          typename A::V anchor[4];
          rpn::grid_anchor<A>(g, {y, x, a}, anchor);
          for (int j = 0; j < 4; ++j) out[j] = A::store(anchor[j]);
        }
      }
    }
  });
  const int64_t per_image = p.level_start[p.num_levels] * 4;
  parallel_for(1, p.num_images, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) std::copy(first, first + per_image, first + i * per_image);
  });
}

}  // namespace

void grid_anchors_cpu(const AnchorParams& p) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return anchor_rows<Arith<float>>(p);
    case ScalarKind::kFloat64: return anchor_rows<Arith<double>>(p);
    case ScalarKind::kFloat16: return anchor_rows<Arith<c10::Half>>(p);
    case ScalarKind::kBFloat16: return anchor_rows<Arith<c10::BFloat16>>(p);
  }
}
void decode_boxes_cpu(const BoxCodingParams& p) { with_torch_transcendentals<rpn::DecodeOp>(p); }
void encode_boxes_cpu(const BoxCodingParams& p) { with_torch_transcendentals<rpn::EncodeOp>(p); }
void propose_cpu(const ProposalParams& p) { with_torch_transcendentals<rpn::ProposeOp>(p); }

namespace {
RpnBackend cpu_backend() {
  return {grid_anchors_cpu, decode_boxes_cpu, encode_boxes_cpu, propose_cpu, multi_image_nms_cpu};
}
}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, CPU, m) { RpnOps<cpu_backend>::register_impls(m); }

}  // namespace fastmask
