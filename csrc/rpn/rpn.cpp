#include "rpn.h"

#include <algorithm>
#include <vector>

#include "common/scalar_kind_torch.h"
#include "common/stable_aten.h"

namespace fastmask {
namespace {

void check_weights(DoubleArrayRef weights, const char* op) {
  FASTMASK_CHECK_VALUE(weights.size() == 4, op, ": weights must be 4 numbers (wx, wy, ww, wh), got ", weights.size());
}

void check_levels(size_t levels, const char* op) {
  FASTMASK_CHECK_VALUE(levels >= 1 && levels <= static_cast<size_t>(kMaxRpnLevels), op, ": expected 1 to ",
                       kMaxRpnLevels, " feature levels, got ", levels);
}

// Level l's cell anchors, [A, 4], as a contiguous tensor of `dtype` on `device`.
Tensor cell_anchors_of(const Tensor& cells, size_t l, ScalarType dtype, const Device& device, const char* op) {
  FASTMASK_CHECK_VALUE(cells.dim() == 2 && cells.size(1) == 4, op, ": cell_anchors[", l,
                       "] must be an [A, 4] tensor, got shape ", shape(cells));
  FASTMASK_CHECK_TYPE(is_floating(cells.scalar_type()), op, ": cell_anchors[", l, "] must be floating point, got ",
                      cells.scalar_type());
  FASTMASK_CHECK_VALUE(cells.device() == device, op, ": cell_anchors[", l, "] is on ", cells.device(), ", expected ",
                       device);
  return aten::contiguous(aten::to(cells, dtype));
}

AnchorGrid make_grid(int64_t height, int64_t width, int64_t stride_h, int64_t stride_w, const Tensor& cells) {
  AnchorGrid g;
  g.height = height;
  g.width = width;
  g.stride_h = stride_h;
  g.stride_w = stride_w;
  g.cells = cells.size(0);
  g.cell_anchors = cells.const_data_ptr();
  return g;
}

void copy_weights(DoubleArrayRef weights, double out[4]) { std::copy(weights.begin(), weights.end(), out); }

}  // namespace

Tensor grid_anchors(const RpnBackend& backend, const TensorList& cell_anchors, IntArrayRef grid_sizes,
                    IntArrayRef strides, int64_t num_images) {
  constexpr const char* op = "fastmask.grid_anchors";
  const size_t L = cell_anchors.size();
  check_levels(L, op);
  FASTMASK_CHECK_VALUE(grid_sizes.size() == 2 * L, op, ": grid_sizes must hold (height, width) of each of the ", L,
                       " levels (", 2 * L, " numbers), got ", grid_sizes.size());
  FASTMASK_CHECK_VALUE(strides.size() == 2 * L, op, ": strides must hold (stride_h, stride_w) of each of the ", L,
                       " levels (", 2 * L, " numbers), got ", strides.size());
  FASTMASK_CHECK_VALUE(num_images >= 0, op, ": num_images must be >= 0, got ", num_images);
  const Device device = cell_anchors[0].device();
  const ScalarType dtype = cell_anchors[0].scalar_type();
  const DeviceScope device_scope(cell_anchors[0]);

  AnchorParams p;
  p.num_images = num_images;
  p.num_levels = static_cast<int>(L);
  p.dtype = scalar_kind(dtype, "fastmask.grid_anchors: cell_anchors");
  std::vector<Tensor> cells(L);
  for (size_t l = 0; l < L; ++l) {
    cells[l] = cell_anchors_of(cell_anchors[l], l, dtype, device, op);
    const int64_t h = grid_sizes[2 * l], w = grid_sizes[2 * l + 1];
    FASTMASK_CHECK_VALUE(h >= 0 && w >= 0, op, ": grid_sizes of level ", l, " must be >= 0, got (", h, ", ", w,
                         ")");
    p.levels[l] = make_grid(h, w, strides[2 * l], strides[2 * l + 1], cells[l]);
    p.level_start[l + 1] = p.level_start[l] + h * w * cells[l].size(0);
  }
  Tensor anchors = aten::empty({num_images, p.level_start[L], 4}, cells[0].scalar_type(), cells[0].device());
  p.anchors = anchors.mutable_data_ptr();
  if (anchors.numel() > 0) backend.grid_anchors(p);
  return anchors;
}

Tensor decode_boxes(const RpnBackend& backend, const Tensor& rel_codes, const Tensor& boxes, DoubleArrayRef weights,
                    double bbox_xform_clip) {
  constexpr const char* op = "fastmask.decode_boxes";
  check_weights(weights, op);
  FASTMASK_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be an [N, 4] tensor, got shape ",
                       shape(boxes));
  FASTMASK_CHECK_VALUE(rel_codes.dim() == 2 && rel_codes.size(0) == boxes.size(0) && rel_codes.size(1) % 4 == 0,
                       op, ": rel_codes must be an [N, 4 * C] tensor with N = ", boxes.size(0), ", got shape ",
                       shape(rel_codes));
  FASTMASK_CHECK_VALUE(boxes.device() == rel_codes.device(), op, ": boxes is on ", boxes.device(),
                       " but rel_codes is on ", rel_codes.device());
  FASTMASK_CHECK_TYPE(is_floating(boxes.scalar_type()), op, ": boxes must be floating point, got ",
                      boxes.scalar_type());
  const DeviceScope device_scope(rel_codes);
  BoxCodingParams p;
  p.dtype = scalar_kind(rel_codes.scalar_type(), "fastmask.decode_boxes: rel_codes");
  // As torchvision: the boxes take the codes' dtype.
  const Tensor codes = aten::contiguous(rel_codes);
  const Tensor reference = aten::contiguous(aten::to(boxes, rel_codes.scalar_type()));
  Tensor out = aten::empty_like(codes);
  p.num_boxes = codes.size(0);
  p.classes = codes.size(1) / 4;
  p.codes = codes.const_data_ptr();
  p.boxes = reference.const_data_ptr();
  copy_weights(weights, p.weights);
  p.clip = bbox_xform_clip;
  p.out = out.mutable_data_ptr();
  if (out.numel() > 0) backend.decode(p);
  return out;
}

Tensor encode_boxes(const RpnBackend& backend, const Tensor& reference_boxes, const Tensor& proposals,
                    DoubleArrayRef weights) {
  constexpr const char* op = "fastmask.encode_boxes";
  check_weights(weights, op);
  FASTMASK_CHECK_VALUE(reference_boxes.dim() == 2 && reference_boxes.size(1) == 4, op,
                       ": reference_boxes must be an [N, 4] tensor, got shape ", shape(reference_boxes));
  FASTMASK_CHECK_VALUE(proposals.sizes().equals(reference_boxes.sizes()), op,
                       ": proposals must have the shape of reference_boxes ", shape(reference_boxes), ", got ",
                       shape(proposals));
  FASTMASK_CHECK_VALUE(proposals.device() == reference_boxes.device(), op, ": proposals is on ", proposals.device(),
                       " but reference_boxes is on ", reference_boxes.device());
  FASTMASK_CHECK_TYPE(proposals.scalar_type() == reference_boxes.scalar_type(), op,
                      ": proposals must have reference_boxes' dtype ", reference_boxes.scalar_type(), ", got ",
                      proposals.scalar_type(), " (fastmask.ops.encode_boxes takes mixed dtypes)");
  const DeviceScope device_scope(reference_boxes);
  BoxCodingParams p;
  p.dtype = scalar_kind(reference_boxes.scalar_type(), "fastmask.encode_boxes: reference_boxes");
  const Tensor reference = aten::contiguous(reference_boxes);
  const Tensor from = aten::contiguous(proposals);
  Tensor out = aten::empty_like(reference);
  p.num_boxes = reference.size(0);
  p.codes = reference.const_data_ptr();
  p.boxes = from.const_data_ptr();
  copy_weights(weights, p.weights);
  p.out = out.mutable_data_ptr();
  if (out.numel() > 0) backend.encode(p);
  return out;
}

std::tuple<Tensor, Tensor, Tensor> generate_proposals(const RpnBackend& backend, const TensorList& objectness,
                                                      const TensorList& deltas, const TensorList& cell_anchors,
                                                      IntArrayRef strides, const Tensor& image_sizes,
                                                      int64_t pre_nms_top_n, int64_t post_nms_top_n,
                                                      double nms_thresh, double score_thresh, double min_size,
                                                      DoubleArrayRef weights, double bbox_xform_clip) {
  constexpr const char* op = "fastmask.generate_proposals";
  const size_t L = objectness.size();
  check_levels(L, op);
  check_weights(weights, op);
  FASTMASK_CHECK_VALUE(deltas.size() == L, op, ": pred_bbox_deltas must have one tensor per level (", L,
                       " levels of objectness), got ", deltas.size());
  FASTMASK_CHECK_VALUE(cell_anchors.size() == L, op, ": cell_anchors must have one [A, 4] tensor per level (", L,
                       " levels of objectness), got ", cell_anchors.size());
  FASTMASK_CHECK_VALUE(strides.size() == 2 * L, op, ": strides must hold (stride_h, stride_w) of each of the ", L,
                       " levels, got ", strides.size(), " numbers");
  FASTMASK_CHECK_VALUE(pre_nms_top_n > 0, op, ": pre_nms_top_n must be > 0, got ", pre_nms_top_n);
  FASTMASK_CHECK_VALUE(post_nms_top_n >= 0, op, ": post_nms_top_n must be >= 0, got ", post_nms_top_n);
  const Tensor& first = objectness[0];
  FASTMASK_CHECK_VALUE(first.dim() == 4, op, ": objectness[0] must be a [B, A, H, W] tensor, got shape ",
                       shape(first));
  const int64_t B = first.size(0);
  const Device device = first.device();
  const ScalarType dtype = first.scalar_type();
  FASTMASK_CHECK_VALUE(image_sizes.dim() == 2 && image_sizes.size(0) == B && image_sizes.size(1) == 2, op,
                       ": image_sizes must be a [B, 2] tensor of (height, width) with B = ", B, ", got shape ",
                       shape(image_sizes));
  FASTMASK_CHECK_TYPE(!is_floating(image_sizes.scalar_type()) && image_sizes.scalar_type() != ScalarType::Bool, op,
                      ": image_sizes must be an integer tensor, got ", image_sizes.scalar_type());
  FASTMASK_CHECK_VALUE(image_sizes.device() == device, op, ": image_sizes is on ", image_sizes.device(),
                       " but objectness is on ", device);
  const DeviceScope device_scope(first);

  ProposalParams p;
  p.num_images = B;
  p.num_levels = static_cast<int>(L);
  p.dtype = scalar_kind(dtype, "fastmask.generate_proposals: objectness");
  std::vector<Tensor> cells(L), level_deltas(L), scores_per_level(L), index_per_level(L), level_ids(L);
  for (size_t l = 0; l < L; ++l) {
    const Tensor& obj = objectness[l];
    const Tensor& del = deltas[l];
    FASTMASK_CHECK_VALUE(obj.dim() == 4 && obj.size(0) == B, op, ": objectness[", l, "] must be a [B, A, H, W] ",
                         "tensor with B = ", B, ", got shape ", shape(obj));
    const int64_t A = obj.size(1), H = obj.size(2), W = obj.size(3);
    FASTMASK_CHECK_VALUE(del.dim() == 4 && del.size(0) == B && del.size(1) == 4 * A && del.size(2) == H &&
                             del.size(3) == W,
                         op, ": pred_bbox_deltas[", l, "] must have shape [B, 4A, H, W] = [", B, ", ", 4 * A, ", ",
                         H, ", ", W, "] to match objectness[", l, "], got ", shape(del));
    FASTMASK_CHECK_TYPE(obj.scalar_type() == dtype && del.scalar_type() == dtype, op, ": objectness[", l,
                        "] and pred_bbox_deltas[", l, "] must have objectness[0]'s dtype ", dtype, ", got ",
                        obj.scalar_type(), " and ", del.scalar_type());
    FASTMASK_CHECK_VALUE(obj.device() == device && del.device() == device, op, ": level ", l,
                         " is not on objectness[0]'s device ", device);
    cells[l] = cell_anchors_of(cell_anchors[l], l, dtype, device, op);
    FASTMASK_CHECK_VALUE(cells[l].size(0) == A, op, ": cell_anchors[", l, "] has ", cells[l].size(0),
                         " anchors per location but objectness[", l, "] has ", A);
    p.levels[l] = make_grid(H, W, strides[2 * l], strides[2 * l + 1], cells[l]);
    level_deltas[l] = del;
    p.deltas[l] = del.const_data_ptr();
    for (int d = 0; d < 4; ++d) p.delta_strides[l][d] = del.stride(d);

    // torchvision's per-level top-k, over the same (y, x, a)-ordered values so that even tied
    // logits select and order the same anchors (topk's tie order depends on the layout).
    const Tensor flat = aten::reshape(aten::permute(obj, {0, 2, 3, 1}), {B, H * W * A});
    const int64_t k = std::min(pre_nms_top_n, flat.size(1));
    std::tie(scores_per_level[l], index_per_level[l]) = aten::topk(flat, k, 1);  // largest, sorted
    level_ids[l] = aten::full({k}, static_cast<double>(l), ScalarType::Long, obj.device());
    p.level_start[l + 1] = p.level_start[l] + k;
  }
  const int64_t K = p.level_start[L];
  if (B == 0 || K == 0 || post_nms_top_n == 0)
    return {aten::zeros({B, post_nms_top_n, 4}, dtype, device), aten::zeros({B, post_nms_top_n}, dtype, device),
            aten::zeros({B}, ScalarType::Long, device)};

  const Tensor index = aten::contiguous(aten::cat(index_per_level, 1));
  // Same shape and layout as torchvision's sigmoid input, so the same (vectorised) arithmetic.
  const Tensor scores = aten::contiguous(aten::sigmoid(aten::cat(scores_per_level, 1)));
  const Tensor sizes = aten::contiguous(aten::to(image_sizes, ScalarType::Long));
  Tensor boxes = aten::empty({B, K, 4}, dtype, device);
  Tensor valid = aten::empty({B, K}, ScalarType::Bool, device);
  p.topk_index = index.const_data_ptr<int64_t>();
  p.scores = scores.const_data_ptr();
  p.image_sizes = sizes.const_data_ptr<int64_t>();
  copy_weights(weights, p.weights);
  p.clip = bbox_xform_clip;
  p.min_size = min_size;
  p.score_thresh = score_thresh;
  p.boxes = boxes.mutable_data_ptr();
  p.valid = valid.mutable_data_ptr<bool>();
  backend.propose(p);

  // Level-aware NMS of every image at once; invalid candidates neither survive nor suppress.
  const Tensor levels = aten::expand(aten::unsqueeze(aten::cat(level_ids, 0), 0), {B, K});
  auto [keep, counts] = multi_image_nms(backend.nms, boxes, scores, levels, valid, nms_thresh, post_nms_top_n);
  const Tensor missing = aten::lt(keep, aten::scalar(0, ScalarType::Long));
  const Tensor picked = aten::clamp(keep, aten::scalar(0, ScalarType::Long, keep.device()), std::nullopt);
  Tensor out_boxes =
      aten::masked_fill(aten::gather(boxes, 1, aten::expand(aten::unsqueeze(picked, 2), {B, post_nms_top_n, 4})),
                        aten::unsqueeze(missing, 2), aten::scalar(0, boxes.scalar_type()));
  Tensor out_scores =
      aten::masked_fill(aten::gather(scores, 1, picked), missing, aten::scalar(0, scores.scalar_type()));
  return {out_boxes, out_scores, counts};
}

}  // namespace fastmask
