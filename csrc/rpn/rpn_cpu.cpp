// CPU kernels of the RPN ops: one element (anchor, box or candidate) per
// iteration of a parallel loop; the arithmetic is rpn_math.h's.
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

constexpr int64_t kGrain = 2048;

template <template <typename> class Body, typename Params>
void dispatch(const Params& p) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return Body<Arith<float>>::run(p);
    case ScalarKind::kFloat64: return Body<Arith<double>>::run(p);
    case ScalarKind::kFloat16: return Body<Arith<c10::Half>>::run(p);
    case ScalarKind::kBFloat16: return Body<Arith<c10::BFloat16>>::run(p);
  }
}

template <typename A>
struct Anchors {
  static void run(const AnchorParams& p) {
    const int64_t total = p.level_start[p.num_levels];
    at::parallel_for(0, p.num_images * total, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) rpn::write_anchor<A>(p, i / total, i % total);
    });
  }
};

template <typename A>
struct Decode {
  static void run(const BoxCodingParams& p) {
    at::parallel_for(0, p.num_boxes * p.classes, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) rpn::decode_one<A>(p, i / p.classes, i % p.classes);
    });
  }
};

template <typename A>
struct Encode {
  static void run(const BoxCodingParams& p) {
    at::parallel_for(0, p.num_boxes, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) rpn::encode_one<A>(p, i);
    });
  }
};

template <typename A>
struct Propose {
  static void run(const ProposalParams& p) {
    const int64_t K = p.level_start[p.num_levels];
    at::parallel_for(0, p.num_images * K, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) rpn::propose_one<A>(p, i / K, i % K);
    });
  }
};

}  // namespace

void grid_anchors_cpu(const AnchorParams& p) { dispatch<Anchors>(p); }
void decode_boxes_cpu(const BoxCodingParams& p) { dispatch<Decode>(p); }
void encode_boxes_cpu(const BoxCodingParams& p) { dispatch<Encode>(p); }
void propose_cpu(const ProposalParams& p) { dispatch<Propose>(p); }

}  // namespace fastmask
