#include "rpn.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/scalar_kind_aten.h"
#include "nms/nms_cpu.h"
#include "rpn_cpu.h"
#include "rpn_registration.h"

namespace fastmask {
namespace {

void check_weights(at::ArrayRef<double> weights, const char* op) {
  TORCH_CHECK_VALUE(weights.size() == 4, op, ": weights must be 4 numbers (wx, wy, ww, wh), got ", weights.size());
}

void check_levels(size_t levels, const char* op) {
  TORCH_CHECK_VALUE(levels >= 1 && levels <= static_cast<size_t>(kMaxRpnLevels), op, ": expected 1 to ",
                    kMaxRpnLevels, " feature levels, got ", levels);
}

// Level l's cell anchors, [A, 4], as a contiguous tensor of `dtype` on `device`.
at::Tensor cell_anchors_of(const at::Tensor& cells, size_t l, at::ScalarType dtype, const at::Device& device,
                           const char* op) {
  TORCH_CHECK_VALUE(cells.dim() == 2 && cells.size(1) == 4, op, ": cell_anchors[", l,
                    "] must be an [A, 4] tensor, got shape ", cells.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(cells.scalar_type()), op, ": cell_anchors[", l,
                   "] must be floating point, got ", cells.scalar_type());
  TORCH_CHECK_VALUE(cells.device() == device, op, ": cell_anchors[", l, "] is on ", cells.device(), ", expected ",
                    device);
  return cells.to(dtype).contiguous();
}

AnchorGrid make_grid(int64_t height, int64_t width, int64_t stride_h, int64_t stride_w, const at::Tensor& cells) {
  AnchorGrid g;
  g.height = height;
  g.width = width;
  g.stride_h = stride_h;
  g.stride_w = stride_w;
  g.cells = cells.size(0);
  g.cell_anchors = cells.const_data_ptr();
  return g;
}

void copy_weights(at::ArrayRef<double> weights, double out[4]) { std::copy(weights.begin(), weights.end(), out); }

}  // namespace

at::Tensor grid_anchors(const RpnBackend& backend, at::TensorList cell_anchors, at::IntArrayRef grid_sizes,
                        at::IntArrayRef strides, int64_t num_images) {
  constexpr const char* op = "fastmask.grid_anchors";
  const size_t L = cell_anchors.size();
  check_levels(L, op);
  TORCH_CHECK_VALUE(grid_sizes.size() == 2 * L, op, ": grid_sizes must hold (height, width) of each of the ", L,
                    " levels (", 2 * L, " numbers), got ", grid_sizes.size());
  TORCH_CHECK_VALUE(strides.size() == 2 * L, op, ": strides must hold (stride_h, stride_w) of each of the ", L,
                    " levels (", 2 * L, " numbers), got ", strides.size());
  TORCH_CHECK_VALUE(num_images >= 0, op, ": num_images must be >= 0, got ", num_images);
  const at::Device device = cell_anchors[0].device();
  const at::ScalarType dtype = cell_anchors[0].scalar_type();
  const c10::OptionalDeviceGuard guard(device);

  AnchorParams p;
  p.num_images = num_images;
  p.num_levels = static_cast<int>(L);
  p.dtype = scalar_kind(dtype, "fastmask.grid_anchors: cell_anchors");
  std::vector<at::Tensor> cells(L);
  for (size_t l = 0; l < L; ++l) {
    cells[l] = cell_anchors_of(cell_anchors[l], l, dtype, device, op);
    const int64_t h = grid_sizes[2 * l], w = grid_sizes[2 * l + 1];
    TORCH_CHECK_VALUE(h >= 0 && w >= 0, op, ": grid_sizes of level ", l, " must be >= 0, got (", h, ", ", w, ")");
    p.levels[l] = make_grid(h, w, strides[2 * l], strides[2 * l + 1], cells[l]);
    p.level_start[l + 1] = p.level_start[l] + h * w * cells[l].size(0);
  }
  at::Tensor anchors = at::empty({num_images, p.level_start[L], 4}, cells[0].options());
  p.anchors = anchors.data_ptr();
  if (anchors.numel() > 0) backend.grid_anchors(p);
  return anchors;
}

at::Tensor decode_boxes(const RpnBackend& backend, const at::Tensor& rel_codes, const at::Tensor& boxes,
                        at::ArrayRef<double> weights, double bbox_xform_clip) {
  constexpr const char* op = "fastmask.decode_boxes";
  check_weights(weights, op);
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be an [N, 4] tensor, got shape ",
                    boxes.sizes());
  TORCH_CHECK_VALUE(rel_codes.dim() == 2 && rel_codes.size(0) == boxes.size(0) && rel_codes.size(1) % 4 == 0,
                    op, ": rel_codes must be an [N, 4 * C] tensor with N = ", boxes.size(0), ", got shape ",
                    rel_codes.sizes());
  TORCH_CHECK_VALUE(boxes.device() == rel_codes.device(), op, ": boxes is on ", boxes.device(),
                    " but rel_codes is on ", rel_codes.device());
  TORCH_CHECK_TYPE(at::isFloatingType(boxes.scalar_type()), op, ": boxes must be floating point, got ",
                   boxes.scalar_type());
  const c10::OptionalDeviceGuard guard(rel_codes.device());
  BoxCodingParams p;
  p.dtype = scalar_kind(rel_codes.scalar_type(), "fastmask.decode_boxes: rel_codes");
  // As torchvision: the boxes take the codes' dtype.
  const at::Tensor codes = rel_codes.contiguous();
  const at::Tensor reference = boxes.to(rel_codes.scalar_type()).contiguous();
  at::Tensor out = at::empty_like(codes);
  p.num_boxes = codes.size(0);
  p.classes = codes.size(1) / 4;
  p.codes = codes.const_data_ptr();
  p.boxes = reference.const_data_ptr();
  copy_weights(weights, p.weights);
  p.clip = bbox_xform_clip;
  p.out = out.data_ptr();
  if (out.numel() > 0) backend.decode(p);
  return out;
}

at::Tensor encode_boxes(const RpnBackend& backend, const at::Tensor& reference_boxes, const at::Tensor& proposals,
                        at::ArrayRef<double> weights) {
  constexpr const char* op = "fastmask.encode_boxes";
  check_weights(weights, op);
  TORCH_CHECK_VALUE(reference_boxes.dim() == 2 && reference_boxes.size(1) == 4, op,
                    ": reference_boxes must be an [N, 4] tensor, got shape ", reference_boxes.sizes());
  TORCH_CHECK_VALUE(proposals.sizes() == reference_boxes.sizes(), op, ": proposals must have the shape of "
                    "reference_boxes ", reference_boxes.sizes(), ", got ", proposals.sizes());
  TORCH_CHECK_VALUE(proposals.device() == reference_boxes.device(), op, ": proposals is on ", proposals.device(),
                    " but reference_boxes is on ", reference_boxes.device());
  TORCH_CHECK_TYPE(proposals.scalar_type() == reference_boxes.scalar_type(), op,
                   ": proposals must have reference_boxes' dtype ", reference_boxes.scalar_type(), ", got ",
                   proposals.scalar_type(), " (fastmask.ops.encode_boxes takes mixed dtypes)");
  const c10::OptionalDeviceGuard guard(reference_boxes.device());
  BoxCodingParams p;
  p.dtype = scalar_kind(reference_boxes.scalar_type(), "fastmask.encode_boxes: reference_boxes");
  const at::Tensor reference = reference_boxes.contiguous();
  const at::Tensor from = proposals.contiguous();
  at::Tensor out = at::empty_like(reference);
  p.num_boxes = reference.size(0);
  p.codes = reference.const_data_ptr();
  p.boxes = from.const_data_ptr();
  copy_weights(weights, p.weights);
  p.out = out.data_ptr();
  if (out.numel() > 0) backend.encode(p);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> generate_proposals(
    const RpnBackend& backend, at::TensorList objectness, at::TensorList deltas, at::TensorList cell_anchors,
    at::IntArrayRef strides, const at::Tensor& image_sizes, int64_t pre_nms_top_n, int64_t post_nms_top_n,
    double nms_thresh, double score_thresh, double min_size, at::ArrayRef<double> weights, double bbox_xform_clip) {
  constexpr const char* op = "fastmask.generate_proposals";
  const size_t L = objectness.size();
  check_levels(L, op);
  check_weights(weights, op);
  TORCH_CHECK_VALUE(deltas.size() == L, op, ": pred_bbox_deltas must have one tensor per level (", L,
                    " levels of objectness), got ", deltas.size());
  TORCH_CHECK_VALUE(cell_anchors.size() == L, op, ": cell_anchors must have one [A, 4] tensor per level (", L,
                    " levels of objectness), got ", cell_anchors.size());
  TORCH_CHECK_VALUE(strides.size() == 2 * L, op, ": strides must hold (stride_h, stride_w) of each of the ", L,
                    " levels, got ", strides.size(), " numbers");
  TORCH_CHECK_VALUE(pre_nms_top_n > 0, op, ": pre_nms_top_n must be > 0, got ", pre_nms_top_n);
  TORCH_CHECK_VALUE(post_nms_top_n >= 0, op, ": post_nms_top_n must be >= 0, got ", post_nms_top_n);
  const at::Tensor& first = objectness[0];
  TORCH_CHECK_VALUE(first.dim() == 4, op, ": objectness[0] must be a [B, A, H, W] tensor, got shape ",
                    first.sizes());
  const int64_t B = first.size(0);
  const at::Device device = first.device();
  const at::ScalarType dtype = first.scalar_type();
  TORCH_CHECK_VALUE(image_sizes.dim() == 2 && image_sizes.size(0) == B && image_sizes.size(1) == 2, op,
                    ": image_sizes must be a [B, 2] tensor of (height, width) with B = ", B, ", got shape ",
                    image_sizes.sizes());
  TORCH_CHECK_TYPE(!at::isFloatingType(image_sizes.scalar_type()) && image_sizes.scalar_type() != at::kBool, op,
                   ": image_sizes must be an integer tensor, got ", image_sizes.scalar_type());
  TORCH_CHECK_VALUE(image_sizes.device() == device, op, ": image_sizes is on ", image_sizes.device(),
                    " but objectness is on ", device);
  const c10::OptionalDeviceGuard guard(device);

  ProposalParams p;
  p.num_images = B;
  p.num_levels = static_cast<int>(L);
  p.dtype = scalar_kind(dtype, "fastmask.generate_proposals: objectness");
  std::vector<at::Tensor> cells(L), level_deltas(L), scores_per_level(L), index_per_level(L), level_ids(L);
  for (size_t l = 0; l < L; ++l) {
    const at::Tensor& obj = objectness[l];
    const at::Tensor& del = deltas[l];
    TORCH_CHECK_VALUE(obj.dim() == 4 && obj.size(0) == B, op, ": objectness[", l, "] must be a [B, A, H, W] ",
                      "tensor with B = ", B, ", got shape ", obj.sizes());
    const int64_t A = obj.size(1), H = obj.size(2), W = obj.size(3);
    TORCH_CHECK_VALUE(del.dim() == 4 && del.size(0) == B && del.size(1) == 4 * A && del.size(2) == H &&
                          del.size(3) == W,
                      op, ": pred_bbox_deltas[", l, "] must have shape [B, 4A, H, W] = [", B, ", ", 4 * A, ", ", H,
                      ", ", W, "] to match objectness[", l, "], got ", del.sizes());
    TORCH_CHECK_TYPE(obj.scalar_type() == dtype && del.scalar_type() == dtype, op, ": objectness[", l,
                     "] and pred_bbox_deltas[", l, "] must have objectness[0]'s dtype ", dtype, ", got ",
                     obj.scalar_type(), " and ", del.scalar_type());
    TORCH_CHECK_VALUE(obj.device() == device && del.device() == device, op, ": level ", l,
                      " is not on objectness[0]'s device ", device);
    cells[l] = cell_anchors_of(cell_anchors[l], l, dtype, device, op);
    TORCH_CHECK_VALUE(cells[l].size(0) == A, op, ": cell_anchors[", l, "] has ", cells[l].size(0),
                      " anchors per location but objectness[", l, "] has ", A);
    p.levels[l] = make_grid(H, W, strides[2 * l], strides[2 * l + 1], cells[l]);
    level_deltas[l] = del;
    p.deltas[l] = del.const_data_ptr();
    for (int d = 0; d < 4; ++d) p.delta_strides[l][d] = del.stride(d);

    // torchvision's per-level top-k, over the same (y, x, a)-ordered values so that even tied
    // logits select and order the same anchors (topk's tie order depends on the layout).
    const at::Tensor flat = obj.permute({0, 2, 3, 1}).reshape({B, H * W * A});
    const int64_t k = std::min(pre_nms_top_n, flat.size(1));
    std::tie(scores_per_level[l], index_per_level[l]) = flat.topk(k, 1, /*largest=*/true, /*sorted=*/true);
    level_ids[l] = at::full({k}, static_cast<int64_t>(l), obj.options().dtype(at::kLong));
    p.level_start[l + 1] = p.level_start[l] + k;
  }
  const int64_t K = p.level_start[L];
  const at::TensorOptions options = first.options();
  if (B == 0 || K == 0 || post_nms_top_n == 0)
    return {at::zeros({B, post_nms_top_n, 4}, options), at::zeros({B, post_nms_top_n}, options),
            at::zeros({B}, options.dtype(at::kLong))};

  const at::Tensor index = at::cat(index_per_level, 1).contiguous();
  // Same shape and layout as torchvision's sigmoid input, so the same (vectorised) arithmetic.
  const at::Tensor scores = at::cat(scores_per_level, 1).sigmoid().contiguous();
  const at::Tensor sizes = image_sizes.to(at::kLong).contiguous();
  at::Tensor boxes = at::empty({B, K, 4}, options);
  at::Tensor valid = at::empty({B, K}, options.dtype(at::kBool));
  p.topk_index = index.const_data_ptr<int64_t>();
  p.scores = scores.const_data_ptr();
  p.image_sizes = sizes.const_data_ptr<int64_t>();
  copy_weights(weights, p.weights);
  p.clip = bbox_xform_clip;
  p.min_size = min_size;
  p.score_thresh = score_thresh;
  p.boxes = boxes.data_ptr();
  p.valid = valid.data_ptr<bool>();
  backend.propose(p);

  // Level-aware NMS of every image at once; invalid candidates neither survive nor suppress.
  const at::Tensor levels = at::cat(level_ids).unsqueeze(0).expand({B, K});
  auto [keep, counts] = multi_image_nms(backend.nms, boxes, scores, levels, valid, nms_thresh, post_nms_top_n);
  const at::Tensor missing = keep.lt(0);
  const at::Tensor picked = keep.clamp_min(0);
  at::Tensor out_boxes =
      boxes.gather(1, picked.unsqueeze(2).expand({B, post_nms_top_n, 4})).masked_fill_(missing.unsqueeze(2), 0);
  at::Tensor out_scores = scores.gather(1, picked).masked_fill_(missing, 0);
  return {out_boxes, out_scores, counts};
}

namespace {
RpnBackend cpu_backend() {
  return {grid_anchors_cpu, decode_boxes_cpu, encode_boxes_cpu, propose_cpu, multi_image_nms_cpu};
}
}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CPU, m) { RpnOps<cpu_backend>::register_impls(m); }

}  // namespace fastmask
