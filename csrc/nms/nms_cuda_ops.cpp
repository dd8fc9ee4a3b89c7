// CUDA registration of the NMS ops: the candidates grouped by class and cut
// into tiles with ATen ops (no host sync), scratch from the caching allocator,
// the launches on the current stream, and their checks.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "common/cuda_launch.h"
#include "nms_cuda.h"
#include "nms_registration.h"

namespace fastmask {
namespace {

// The greedy kernel's input (NmsCudaGroups), as tensors.
struct GroupedCandidates {
  at::Tensor ranks;      // [B, N] int32
  at::Tensor num_valid;  // [B] int64
  at::Tensor tiles;      // [B * N + 1] int64
  at::Tensor num_tiles;  // [1] int64
};

// Per image: the valid candidates grouped by class (ascending), in score order
// within a class, then the invalid ones; every group cut into tiles of at most
// kNmsTile candidates, listed in (image, slot) order. Sizes stay on the device.
GroupedCandidates group_candidates(const SortedNmsInputs& in) {
  const int64_t B = in.params.num_images, N = in.params.num_boxes;
  const at::TensorOptions longs = in.order.options();
  at::Tensor ranks, classes;  // in grouped order: the score ranks and their classes
  if (in.classes.defined()) std::tie(classes, ranks) = in.classes.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false);
  GroupedCandidates out;
  if (in.valid.defined()) {
    // Valid candidates first, by a second stable sort on validity alone: each part stays grouped,
    // and no class id has to be given up as a sentinel for the invalid ones.
    const at::Tensor valid = ranks.defined() ? in.valid.gather(1, ranks) : in.valid;
    const at::Tensor valid_first = std::get<1>(valid.logical_not().to(at::kByte).sort(true, 1, false));
    ranks = ranks.defined() ? ranks.gather(1, valid_first) : valid_first;
    if (classes.defined()) classes = classes.gather(1, valid_first);
    out.num_valid = in.valid.sum(1);
  } else {
    out.num_valid = at::full({B}, N, longs);
  }
  out.ranks = ranks.defined() ? ranks.to(at::kInt) : at::arange(N, longs.dtype(at::kInt)).repeat({B, 1});

  const at::Tensor slot = at::arange(N, longs);
  at::Tensor group_start = slot.eq(0).expand({B, N});
  if (classes.defined()) group_start = group_start | classes.ne(classes.roll(1, 1));
  const at::Tensor group_begin = std::get<0>(at::where(group_start, slot, 0).cummax(1));
  const at::Tensor tile_start =
      ((slot - group_begin).remainder(kNmsTile).eq(0) & slot.lt(out.num_valid.unsqueeze(1))).flatten();
  const at::Tensor record = at::arange(B * N, longs).mul_(2).add_(group_start.flatten());
  // Ordered compaction of the tile starts; the others all land on the spare last entry.
  const at::Tensor position = tile_start.cumsum(0);
  out.tiles = at::empty({B * N + 1}, longs).scatter_(0, at::where(tile_start, position - 1, B * N), record);
  out.num_tiles = position.narrow(0, B * N - 1, 1);
  return out;
}

}  // namespace

void multi_image_nms_cuda_run(const SortedNmsInputs& in) {
  const NmsParams& p = in.params;
  TORCH_CHECK_VALUE(p.num_boxes <= std::numeric_limits<int32_t>::max(),
                    "fastmask.multi_image_nms (CUDA): at most 2^31 - 1 boxes per image, got ", p.num_boxes);
  const GroupedCandidates grouped = group_candidates(in);
  const at::TensorOptions options = in.order.options();
  const at::Tensor tile_status = at::zeros({p.num_images * p.num_boxes}, options.dtype(at::kInt));
  const int64_t kept_words = p.num_images * nms_kept_words(p.num_boxes);
  const at::Tensor kept = at::zeros({kept_words + 1}, options);  // the kept flags, then the ticket counter

  const cudaDeviceProp* device = at::cuda::getCurrentDeviceProperties();
  const int64_t resident = static_cast<int64_t>(device->multiProcessorCount) *
                           (device->maxThreadsPerMultiProcessor / kNmsTile);
  NmsCudaGroups g;
  g.ranks = grouped.ranks.data_ptr<int32_t>();
  g.num_valid = grouped.num_valid.const_data_ptr<int64_t>();
  g.tiles = grouped.tiles.const_data_ptr<int64_t>();
  g.num_tiles = grouped.num_tiles.const_data_ptr<int64_t>();
  g.tile_status = tile_status.data_ptr<int32_t>();
  g.kept = reinterpret_cast<unsigned long long*>(kept.data_ptr<int64_t>());
  g.next_ticket = g.kept + kept_words;
  g.num_blocks = static_cast<int>(std::max<int64_t>(1, std::min(resident, p.num_images * p.num_boxes)));
  run_cuda_launcher("nms", [&] { return multi_image_nms_cuda(p, g, c10::cuda::getCurrentCUDAStream()); });
}

namespace {
NmsKernel cuda_nms_kernel() { return multi_image_nms_cuda_run; }

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { NmsOps<cuda_nms_kernel>::register_impls(m); }

}  // namespace fastmask
