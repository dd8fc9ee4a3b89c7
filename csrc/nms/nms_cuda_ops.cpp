// CUDA registration of the NMS ops: the candidates grouped by class and cut
// into tiles with ATen ops (no host sync), scratch from the caching allocator,
// the launches on the current stream, and their checks.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "common/cuda_launch.h"
#include "common/stable_aten.h"
#include "nms_cuda.h"
#include "nms_registration.h"

namespace fastmask {
namespace {

// The greedy kernel's input (NmsCudaGroups), as tensors.
struct GroupedCandidates {
  Tensor ranks;      // [B, N] int32
  Tensor num_valid;  // [B] int64
  Tensor tiles;        // [B * N] int64
  Tensor num_tiles;    // [1] int64
  Tensor first_tiles;  // [B * N] int64
};

// Per image: the valid candidates grouped by class (ascending), in score order
// within a class, then the invalid ones; every group cut into tiles of at most
// kNmsTile candidates, listed in (image, slot) order. Sizes stay on the device.
GroupedCandidates group_candidates(const SortedNmsInputs& in) {
  using aten::scalar;
  const int64_t B = in.params.num_images, N = in.params.num_boxes;
  const Device device = in.order.device();
  // int64 0-dim operands on the device: the Scalar arguments of the integer arithmetic below.
  const auto index = [&](int64_t v) { return scalar(static_cast<double>(v), ScalarType::Long, device); };
  Tensor ranks, classes;  // in grouped order: the score ranks and their classes
  if (in.classes.defined()) std::tie(classes, ranks) = aten::sort(in.classes, /*dim=*/1, /*descending=*/false);
  GroupedCandidates out;
  if (in.valid.defined()) {
    // Valid candidates first, by a second stable sort on validity alone: each part stays grouped,
    // and no class id has to be given up as a sentinel for the invalid ones.
    const Tensor valid = ranks.defined() ? aten::gather(in.valid, 1, ranks) : in.valid;
    const Tensor valid_first = aten::sort(aten::to(aten::logical_not(valid), ScalarType::Byte), 1, false).second;
    ranks = ranks.defined() ? aten::gather(ranks, 1, valid_first) : valid_first;
    if (classes.defined()) classes = aten::gather(classes, 1, valid_first);
    out.num_valid = aten::sum(in.valid, 1);
  } else {
    out.num_valid = aten::full({B}, static_cast<double>(N), ScalarType::Long, device);
  }
  out.ranks = ranks.defined() ? aten::to(ranks, ScalarType::Int)
                              : aten::repeat(aten::to(aten::arange(N, device), ScalarType::Int), {B, 1});

  const Tensor slot = aten::arange(N, device);
  Tensor group_start = aten::expand(aten::eq(slot, index(0)), {B, N});
  if (classes.defined()) group_start = aten::bitwise_or(group_start, aten::ne(classes, aten::roll(classes, 1, 1)));
  const Tensor group_begin = aten::cummax(aten::where(group_start, slot, index(0)), 1).first;
  // slot - group_begin: integers have no subtraction in the stable ABI; slot + (-1) * group_begin
  // is the same int64 values.
  const Tensor in_group = aten::add_integers(aten::expand(slot, {B, N}), aten::mul(group_begin, index(-1)));
  const Tensor tile_start = aten::flatten(
      aten::bitwise_and(aten::eq(aten::remainder(in_group, index(kNmsTile)), index(0)),
                        aten::lt(slot, aten::unsqueeze(out.num_valid, 1))));
  const Tensor flat_slot = aten::arange(B * N, device);
  const Tensor record = aten::add_integers(aten::mul(flat_slot, index(2)), aten::to(aten::flatten(group_start), ScalarType::Long));
  // Ordered compaction of the tile starts into the first num_tiles entries. Every other slot is
  // stored too (a scatter writes each index), each to an entry of its own past the first B * N,
  // so no two stores go to one address.
  const Tensor position = aten::cumsum(tile_start, 0);
  const Tensor target = aten::where(tile_start, aten::add_integers(position, aten::expand(index(-1), {B * N})),
                                    aten::add_integers(flat_slot, aten::expand(index(B * N), {B * N})));
  out.tiles = aten::narrow(aten::scatter(aten::zeros({2 * B * N}, ScalarType::Long, device), 0, target, record), 0, 0,
                           B * N);
  out.num_tiles = aten::narrow(position, 0, B * N - 1, 1);
  // Each tile's group's first tile: the last tile at or before it that starts a group (record & 1),
  // once here rather than by a walk back over the group's tiles in every block.
  const Tensor starts_group = aten::eq(aten::bitwise_and(out.tiles, index(1)), index(1));
  out.first_tiles = aten::cummax(aten::where(starts_group, flat_slot, index(0)), 0).first;
  return out;
}

// The current device's multiprocessor count and resident threads per multiprocessor.
int device_attribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&value, attribute, device);
  FASTMASK_CHECK(error == cudaSuccess, "fastmask.multi_image_nms (CUDA): cannot query the device: ",
                 cudaGetErrorString(error));
  return value;
}

}  // namespace

void multi_image_nms_cuda_run(const SortedNmsInputs& in) {
  const NmsParams& p = in.params;
  FASTMASK_CHECK_VALUE(p.num_boxes <= std::numeric_limits<int32_t>::max(),
                       "fastmask.multi_image_nms (CUDA): at most 2^31 - 1 boxes per image, got ", p.num_boxes);
  const GroupedCandidates grouped = group_candidates(in);
  const Device device = in.order.device();
  const Tensor tile_status = aten::zeros({p.num_images * p.num_boxes}, ScalarType::Int, device);
  const int64_t kept_words = p.num_images * nms_kept_words(p.num_boxes);
  const Tensor kept = aten::zeros({kept_words + 1}, ScalarType::Long, device);  // the kept flags, then the ticket counter

  const int64_t resident = static_cast<int64_t>(device_attribute(cudaDevAttrMultiProcessorCount)) *
                           (device_attribute(cudaDevAttrMaxThreadsPerMultiProcessor) / kNmsTile);
  NmsCudaGroups g;
  g.ranks = grouped.ranks.mutable_data_ptr<int32_t>();
  g.num_valid = grouped.num_valid.const_data_ptr<int64_t>();
  g.tiles = grouped.tiles.const_data_ptr<int64_t>();
  g.num_tiles = grouped.num_tiles.const_data_ptr<int64_t>();
  g.first_tiles = grouped.first_tiles.const_data_ptr<int64_t>();
  g.tile_status = tile_status.mutable_data_ptr<int32_t>();
  g.kept = reinterpret_cast<unsigned long long*>(kept.mutable_data_ptr<int64_t>());
  g.next_ticket = g.kept + kept_words;
  g.num_blocks = static_cast<int>(std::max<int64_t>(1, std::min(resident, p.num_images * p.num_boxes)));
  run_cuda_launcher("nms", [&](cudaStream_t stream) { return multi_image_nms_cuda(p, g, stream); });
}

namespace {
NmsKernel cuda_nms_kernel() { return multi_image_nms_cuda_run; }

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { NmsOps<cuda_nms_kernel>::register_impls(m); }

}  // namespace fastmask
