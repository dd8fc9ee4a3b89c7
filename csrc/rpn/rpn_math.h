// The arithmetic of torchvision's AnchorGenerator, BoxCoder and
// RegionProposalNetwork.filter_proposals, one box at a time, shared by the CPU
// and CUDA kernels.
//
// Written expression by expression as torchvision's tensor code runs: every
// tensor op rounds its result to the tensor's dtype (`A::round`, a no-op for
// float32/float64), Python scalars are converted to that dtype first (as
// ATen's clamp / comparison kernels do), and nothing is contracted into an
// FMA (-ffp-contract=off, -fmad=false). So anchors, clipping and the tests are
// bit-equal to torchvision. exp and log are the one place where implementations
// round differently (torch's CPU exp/log are vectorised library code whose
// results depend on the CPU; CUDA's torch.exp is expf): CUDA computes them inline,
// the CPU takes them from torch's own exp/log (see Pass), so both equal torchvision.
//
// `A` is the arithmetic of one storage type T: `V` the compute type (float for
// fp16/bf16), load/store/round, exp/log, and div_scalar (ATen divides by a
// Python scalar on the CPU, but multiplies by its reciprocal on CUDA).
#pragma once

#include <cstdint>

#include "common/host_device.h"
#include "rpn_params.h"

namespace fastmask {
namespace rpn {

// torch.clamp: NaN stays NaN.
template <typename V>
FASTMASK_HOST_DEVICE V clamp_nan(V v, V lo, V hi) {
  if (v != v) return v;
  v = v < lo ? lo : v;
  return hi < v ? hi : v;
}

template <typename V>
FASTMASK_HOST_DEVICE V min_nan(V v, V hi) {
  return v != v ? v : (hi < v ? hi : v);
}

// An int64 (a shift, an image size) or a Python float converted to the dtype.
template <typename A, typename S>
FASTMASK_HOST_DEVICE typename A::V to_dtype(S s) {
  return A::round(static_cast<typename A::V>(s));
}

// Anchor coordinate: int64 shift + cell anchor coordinate, in the dtype.
template <typename A>
FASTMASK_HOST_DEVICE typename A::V anchor_coord(int64_t shift, typename A::T cell) {
  return A::round(to_dtype<A>(shift) + A::load(cell));
}

// The level of element `index` of per-level blocks starting at level_start[].
FASTMASK_HOST_DEVICE int level_of(const int64_t* level_start, int num_levels, int64_t index) {
  int l = 0;
  while (l + 1 < num_levels && index >= level_start[l + 1]) ++l;
  return l;
}

// Anchor `n` of a level in torchvision's order: location (row-major), then cell anchor.
struct GridCell {
  int64_t y, x, a;
};

FASTMASK_HOST_DEVICE GridCell grid_cell(const AnchorGrid& g, int64_t n) {
  const int64_t location = n / g.cells;
  const int64_t y = location / g.width;
  return {y, location - y * g.width, n - location * g.cells};
}

template <typename A>
FASTMASK_HOST_DEVICE void grid_anchor(const AnchorGrid& g, GridCell c, typename A::V out[4]) {
  const typename A::T* cell = static_cast<const typename A::T*>(g.cell_anchors) + c.a * 4;
  out[0] = anchor_coord<A>(c.x * g.stride_w, cell[0]);
  out[1] = anchor_coord<A>(c.y * g.stride_h, cell[1]);
  out[2] = anchor_coord<A>(c.x * g.stride_w, cell[2]);
  out[3] = anchor_coord<A>(c.y * g.stride_h, cell[3]);
}

// How a kernel gets the exp (decode) or log (encode) values of its elements.
// kInline: computes them itself (CUDA, where torch.exp/log are expf/logf too).
// kArguments, then kFinish (the CPU): the first pass writes the arguments of
// exp/log, [n, 2] in the dtype, to Params::transcendental; the binding applies
// torch's own exp_/log_ to that buffer; the second pass reads the values back.
// So the results are torchvision's bit for bit whatever library code torch's
// CPU exp and log run on this machine.
enum class Pass { kInline, kArguments, kFinish };

template <typename A>
struct TranscendentalPair {
  typename A::V first, second;
};

// exp or log of (first, second) for element i, per the pass: the values, or
// nothing (kArguments: the arguments are stored and the caller returns).
template <typename A, Pass P, bool kLog>
FASTMASK_HOST_DEVICE bool transcendental(void* buffer, int64_t i, TranscendentalPair<A>& v) {
  using T = typename A::T;
  T* slot = static_cast<T*>(buffer) + 2 * i;
  if constexpr (P == Pass::kArguments) {
    slot[0] = A::store(v.first);
    slot[1] = A::store(v.second);
    return false;
  } else if constexpr (P == Pass::kFinish) {
    v = {A::load(slot[0]), A::load(slot[1])};
  } else if constexpr (kLog) {
    v = {A::round(A::log(v.first)), A::round(A::log(v.second))};
  } else {
    v = {A::round(A::exp(v.first)), A::round(A::exp(v.second))};
  }
  return true;
}

// BoxCoder.decode_single for one 4-vector of codes against its box, in two
// steps around the exp: the exponents (dw, dh), then the box from exp(dw), exp(dh).
template <typename A>
FASTMASK_HOST_DEVICE TranscendentalPair<A> decode_exponents(const typename A::V code[4], const double weights[4],
                                                            typename A::V clip) {
  return {min_nan(A::div_scalar(code[2], weights[2]), clip), min_nan(A::div_scalar(code[3], weights[3]), clip)};
}

template <typename A>
FASTMASK_HOST_DEVICE void decode_box(const typename A::V box[4], const typename A::V code[4],
                                     const double weights[4], TranscendentalPair<A> exps, typename A::V out[4]) {
  using V = typename A::V;
  const V one_half = 0.5;
  const V width = A::round(box[2] - box[0]);
  const V height = A::round(box[3] - box[1]);
  const V ctr_x = A::round(box[0] + A::round(one_half * width));
  const V ctr_y = A::round(box[1] + A::round(one_half * height));
  const V dx = A::div_scalar(code[0], weights[0]);
  const V dy = A::div_scalar(code[1], weights[1]);
  const V pred_ctr_x = A::round(A::round(dx * width) + ctr_x);
  const V pred_ctr_y = A::round(A::round(dy * height) + ctr_y);
  const V pred_w = A::round(exps.first * width);
  const V pred_h = A::round(exps.second * height);
  const V half_w = A::round(one_half * pred_w);
  const V half_h = A::round(one_half * pred_h);
  out[0] = A::round(pred_ctr_x - half_w);
  out[1] = A::round(pred_ctr_y - half_h);
  out[2] = A::round(pred_ctr_x + half_w);
  out[3] = A::round(pred_ctr_y + half_h);
}

// torchvision's encode_boxes: the codes that take `proposal` to `reference`,
// in two steps around the log: the size ratios, then the codes from their logs.
template <typename A>
FASTMASK_HOST_DEVICE TranscendentalPair<A> encode_ratios(const typename A::V reference[4],
                                                         const typename A::V proposal[4]) {
  return {A::round(A::round(reference[2] - reference[0]) / A::round(proposal[2] - proposal[0])),
          A::round(A::round(reference[3] - reference[1]) / A::round(proposal[3] - proposal[1]))};
}

template <typename A>
FASTMASK_HOST_DEVICE void encode_box(const typename A::V reference[4], const typename A::V proposal[4],
                                     const double weights[4], TranscendentalPair<A> logs, typename A::V out[4]) {
  using V = typename A::V;
  const V one_half = 0.5;
  const V ex_w = A::round(proposal[2] - proposal[0]);
  const V ex_h = A::round(proposal[3] - proposal[1]);
  const V ex_ctr_x = A::round(proposal[0] + A::round(one_half * ex_w));
  const V ex_ctr_y = A::round(proposal[1] + A::round(one_half * ex_h));
  const V gt_w = A::round(reference[2] - reference[0]);
  const V gt_h = A::round(reference[3] - reference[1]);
  const V gt_ctr_x = A::round(reference[0] + A::round(one_half * gt_w));
  const V gt_ctr_y = A::round(reference[1] + A::round(one_half * gt_h));
  // The weights are a tensor of the boxes' dtype in torchvision.
  out[0] = A::round(A::round(to_dtype<A>(weights[0]) * A::round(gt_ctr_x - ex_ctr_x)) / ex_w);
  out[1] = A::round(A::round(to_dtype<A>(weights[1]) * A::round(gt_ctr_y - ex_ctr_y)) / ex_h);
  out[2] = A::round(to_dtype<A>(weights[2]) * logs.first);
  out[3] = A::round(to_dtype<A>(weights[3]) * logs.second);
}

// The element-wise ops, one element per call of apply(p, i), i < size(p): run
// by a parallel loop on the CPU and a grid-stride loop on CUDA.

// Anchor `i` of [num_images, total] anchors.
template <typename A>
struct AnchorOp {
  static FASTMASK_HOST_DEVICE int64_t size(const AnchorParams& p) {
    return p.num_images * p.level_start[p.num_levels];
  }
  static FASTMASK_HOST_DEVICE void apply(const AnchorParams& p, int64_t i);
};

template <typename A>
FASTMASK_HOST_DEVICE void AnchorOp<A>::apply(const AnchorParams& p, int64_t i) {
  using V = typename A::V;
  const int64_t total = p.level_start[p.num_levels];
  const int64_t image = i / total, index = i - image * total;
  const int l = level_of(p.level_start, p.num_levels, index);
  V anchor[4];
  grid_anchor<A>(p.levels[l], grid_cell(p.levels[l], index - p.level_start[l]), anchor);
  typename A::T* out = static_cast<typename A::T*>(p.anchors) + i * 4;
  for (int j = 0; j < 4; ++j) out[j] = A::store(anchor[j]);
}

// The 4-vector `i` of [num_boxes, classes] codes.
template <typename A, Pass P>
struct DecodeOp {
  static constexpr bool kLog = false;
  static FASTMASK_HOST_DEVICE int64_t size(const BoxCodingParams& p) { return p.num_boxes * p.classes; }
  static FASTMASK_HOST_DEVICE void apply(const BoxCodingParams& p, int64_t i);
};

template <typename A, Pass P>
FASTMASK_HOST_DEVICE void DecodeOp<A, P>::apply(const BoxCodingParams& p, int64_t i) {
  using T = typename A::T;
  using V = typename A::V;
  const int64_t n = i / p.classes;
  const T* code_in = static_cast<const T*>(p.codes) + i * 4;
  V code[4];
  for (int j = 0; j < 4; ++j) code[j] = A::load(code_in[j]);
  TranscendentalPair<A> exps = decode_exponents<A>(code, p.weights, to_dtype<A>(p.clip));
  if (!transcendental<A, P, false>(p.transcendental, i, exps)) return;
  const T* b = static_cast<const T*>(p.boxes) + n * 4;
  V box[4], out[4];
  for (int j = 0; j < 4; ++j) box[j] = A::load(b[j]);
  decode_box<A>(box, code, p.weights, exps, out);
  T* o = static_cast<T*>(p.out) + i * 4;
  for (int j = 0; j < 4; ++j) o[j] = A::store(out[j]);
}

// Box `n` of num_boxes.
template <typename A, Pass P>
struct EncodeOp {
  static constexpr bool kLog = true;
  static FASTMASK_HOST_DEVICE int64_t size(const BoxCodingParams& p) { return p.num_boxes; }
  static FASTMASK_HOST_DEVICE void apply(const BoxCodingParams& p, int64_t n);
};

template <typename A, Pass P>
FASTMASK_HOST_DEVICE void EncodeOp<A, P>::apply(const BoxCodingParams& p, int64_t n) {
  using T = typename A::T;
  using V = typename A::V;
  const T* r = static_cast<const T*>(p.codes) + n * 4;
  const T* q = static_cast<const T*>(p.boxes) + n * 4;
  V reference[4], proposal[4], out[4];
  for (int j = 0; j < 4; ++j) {
    reference[j] = A::load(r[j]);
    proposal[j] = A::load(q[j]);
  }
  TranscendentalPair<A> logs = encode_ratios<A>(reference, proposal);
  if (!transcendental<A, P, true>(p.transcendental, n, logs)) return;
  encode_box<A>(reference, proposal, p.weights, logs, out);
  T* o = static_cast<T*>(p.out) + n * 4;
  for (int j = 0; j < 4; ++j) o[j] = A::store(out[j]);
}

// Candidate i of [B, K]: its anchor, decoded with its deltas, clipped to the
// image, and whether it survives remove_small_boxes and the score threshold.
template <typename A, Pass P>
struct ProposeOp {
  static constexpr bool kLog = false;
  static FASTMASK_HOST_DEVICE int64_t size(const ProposalParams& p) {
    return p.num_images * p.level_start[p.num_levels];
  }
  static FASTMASK_HOST_DEVICE void apply(const ProposalParams& p, int64_t i);
};

template <typename A, Pass P>
FASTMASK_HOST_DEVICE void ProposeOp<A, P>::apply(const ProposalParams& p, int64_t i) {
  using T = typename A::T;
  using V = typename A::V;
  const int64_t K = p.level_start[p.num_levels];
  const int64_t b = i / K, k = i - b * K;
  const int l = level_of(p.level_start, p.num_levels, k);
  const AnchorGrid& g = p.levels[l];
  const GridCell c = grid_cell(g, p.topk_index[i]);
  const int64_t* s = p.delta_strides[l];
  const T* d = static_cast<const T*>(p.deltas[l]) + b * s[0] + c.a * 4 * s[1] + c.y * s[2] + c.x * s[3];
  const V code[4] = {A::load(d[0]), A::load(d[s[1]]), A::load(d[2 * s[1]]), A::load(d[3 * s[1]])};
  TranscendentalPair<A> exps = decode_exponents<A>(code, p.weights, to_dtype<A>(p.clip));
  if (!transcendental<A, P, false>(p.transcendental, i, exps)) return;
  V anchor[4], box[4];
  grid_anchor<A>(g, c, anchor);
  decode_box<A>(anchor, code, p.weights, exps, box);

  const V zero = 0;
  const V max_x = to_dtype<A>(p.image_sizes[b * 2 + 1]), max_y = to_dtype<A>(p.image_sizes[b * 2]);
  box[0] = clamp_nan(box[0], zero, max_x);
  box[1] = clamp_nan(box[1], zero, max_y);
  box[2] = clamp_nan(box[2], zero, max_x);
  box[3] = clamp_nan(box[3], zero, max_y);
  const V min_size = to_dtype<A>(p.min_size);
  const V score = A::load(static_cast<const T*>(p.scores)[i]);
  p.valid[i] = A::round(box[2] - box[0]) >= min_size && A::round(box[3] - box[1]) >= min_size &&
              score >= to_dtype<A>(p.score_thresh);
  T* out = static_cast<T*>(p.boxes) + i * 4;
  for (int j = 0; j < 4; ++j) out[j] = A::store(box[j]);
}

}  // namespace rpn
}  // namespace fastmask
