// CUDA registration of the NMS ops: scratch buffers from the caching
// allocator, the current stream, and a check of every launch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_launch.h"
#include "nms_cuda.h"
#include "nms_registration.h"

namespace fastmask {

void multi_image_nms_cuda_run(const NmsParams& p) {
  const int64_t words = nms_mask_words(p.num_boxes);
  const double bytes = 8.0 * p.num_images * p.num_boxes * words;
  TORCH_CHECK_VALUE(bytes < 16.0 * (1LL << 30), "fastmask.nms (CUDA): the overlap mask of ", p.num_images,
                    " image(s) x ", p.num_boxes, " boxes would take ", bytes / (1LL << 30),
                    " GiB; keep fewer boxes per image (score threshold or top-k first)");
  const auto options = at::TensorOptions().device(at::kCUDA, c10::cuda::current_device()).dtype(at::kLong);
  at::Tensor mask = at::empty({p.num_images * p.num_boxes * words}, options);
  at::Tensor removed = at::empty({p.num_images * words}, options);
  run_cuda_launcher("nms", [&] {
    return multi_image_nms_cuda(p, mask.data_ptr(), removed.data_ptr(), c10::cuda::getCurrentCUDAStream());
  });
}

namespace {
NmsKernel cuda_nms_kernel() { return multi_image_nms_cuda_run; }

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CUDA, m) { NmsOps<cuda_nms_kernel>::register_impls(m); }

}  // namespace fastmask
