#include "resize.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/huge_pages.h"
#include "common/linear_interp.h"
#include "common/scalar_kind_aten.h"
#include "common/torch_cpu_arith.h"
#include "resize_cpu.h"
#include "resize_registration.h"

namespace fastmask {
namespace {

void set_strides(int64_t (&out)[4], int64_t n, int64_t c, int64_t y, int64_t x) {
  out[0] = n, out[1] = c, out[2] = y, out[3] = x;
}

// Whether F.interpolate would take PyTorch's channels-last kernel for this input (as torch
// passes it to the kernel) and output size, now.
bool interpolate_takes_four_tap(const at::Tensor& torch_input, int64_t out_height, int64_t out_width) {
  return torch_takes_four_tap(torch_input.is_contiguous(at::MemoryFormat::ChannelsLast), torch_input.size(1),
                              out_height, out_width, at::get_num_threads() == 1);
}

void check_scale_factor(c10::optional<double> s, const char* name) {
  TORCH_CHECK_VALUE(!s || std::isfinite(*s), "fastmask.resize_bilinear: ", name, " must be finite, got ", *s);
}

}  // namespace

at::Tensor resize_bilinear(ResizeKernel kernel, const at::Tensor& input, int64_t out_height, int64_t out_width,
                           c10::optional<double> scale_factor_h, c10::optional<double> scale_factor_w) {
  TORCH_CHECK_VALUE(input.dim() == 4, "fastmask.resize_bilinear: input must be a 4-D [N, C, H, W] tensor, got shape ",
                    input.sizes());
  TORCH_CHECK_VALUE(input.size(2) > 0 && input.size(3) > 0,
                    "fastmask.resize_bilinear: input height and width must be positive, got ", input.sizes());
  TORCH_CHECK_VALUE(out_height > 0 && out_width > 0,
                    "fastmask.resize_bilinear: the output size must be positive, got (", out_height, ", ", out_width,
                    ")");
  check_scale_factor(scale_factor_h, "scale_factor_h");
  check_scale_factor(scale_factor_w, "scale_factor_w");
  ResizeParams p;
  p.src_uint8 = p.dst_uint8 = input.scalar_type() == at::kByte;
  if (!p.src_uint8) p.dtype = scalar_kind(input.scalar_type(), "fastmask.resize_bilinear: input");
  const c10::OptionalDeviceGuard device_guard(input.device());

  // channels_last when the input is (and is not also plain contiguous), as the other ops.
  const bool channels_last = !input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor output = at::empty(
      {input.size(0), input.size(1), out_height, out_width},
      input.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  if (output.numel() == 0) return output;
  p.src = input.const_data_ptr();
  p.batch = input.size(0), p.channels = input.size(1), p.in_height = input.size(2), p.in_width = input.size(3);
  set_strides(p.src_stride, input.stride(0), input.stride(1), input.stride(2), input.stride(3));
  p.out_height = p.canvas_height = out_height;
  p.out_width = p.canvas_width = out_width;
  p.scale_factor_h = scale_factor_h.value_or(0.0);
  p.scale_factor_w = scale_factor_w.value_or(0.0);
  // uint8 output rounds the exact value (PyTorch's uint8 kernel is a fixed-point one).
  p.torch_fused = p.dst_uint8 || torch_kernels_fused();
  p.torch_four_tap = !p.dst_uint8 && interpolate_takes_four_tap(input, out_height, out_width);
  if (output.is_cpu()) advise_huge_pages(output.data_ptr(), output.nbytes());
  p.dst = output.data_ptr();
  set_strides(p.dst_stride, output.stride(0), output.stride(1), output.stride(2), output.stride(3));
  kernel(&p, 1);
  return output;
}

at::Tensor preprocess_images(ResizeKernel kernel, at::TensorList images, at::IntArrayRef sizes,
                             at::ArrayRef<double> mean, at::ArrayRef<double> std_dev, int64_t height, int64_t width) {
  const int64_t B = static_cast<int64_t>(images.size());
  TORCH_CHECK_VALUE(B > 0, "fastmask.preprocess_images: images must not be empty");
  TORCH_CHECK_VALUE(static_cast<int64_t>(sizes.size()) == 2 * B, "fastmask.preprocess_images: sizes must hold ",
                    "(height, width) of each of the ", B, " images, got ", sizes.size(), " values");
  TORCH_CHECK_VALUE(height > 0 && width > 0, "fastmask.preprocess_images: the batch size (", height, ", ", width,
                    ") must be positive");
  const at::Tensor& first = images[0];
  const bool uint8 = first.scalar_type() == at::kByte;
  for (int64_t i = 0; i < B; ++i) {
    const at::Tensor& im = images[i];
    TORCH_CHECK_VALUE(im.dim() == 3, "fastmask.preprocess_images: images[", i, "] must be 3-D (",
                      uint8 ? "[H, W, C] uint8" : "[C, H, W] floating", "), got shape ", im.sizes());
    TORCH_CHECK_TYPE(im.scalar_type() == first.scalar_type(), "fastmask.preprocess_images: images[", i, "] is ",
                     im.scalar_type(), " but images[0] is ", first.scalar_type(), "; all images need one dtype");
    TORCH_CHECK_VALUE(im.device() == first.device(), "fastmask.preprocess_images: images[", i, "] is on ",
                      im.device(), " but images[0] is on ", first.device());
    TORCH_CHECK_VALUE(im.size(uint8 ? 2 : 0) == first.size(uint8 ? 2 : 0), "fastmask.preprocess_images: images[", i,
                      "] has ", im.size(uint8 ? 2 : 0), " channels but images[0] has ", first.size(uint8 ? 2 : 0));
    TORCH_CHECK_VALUE(im.numel() > 0, "fastmask.preprocess_images: images[", i, "] is empty, shape ", im.sizes());
    TORCH_CHECK_VALUE(sizes[2 * i] > 0 && sizes[2 * i + 1] > 0 && sizes[2 * i] <= height && sizes[2 * i + 1] <= width,
                      "fastmask.preprocess_images: the resized size (", sizes[2 * i], ", ", sizes[2 * i + 1],
                      ") of images[", i, "] must be positive and fit the batch (", height, ", ", width, ")");
  }
  const int64_t C = first.size(uint8 ? 2 : 0);
  TORCH_CHECK_VALUE(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std_dev.size()) == C,
                    "fastmask.preprocess_images: image_mean and image_std need one value per channel (", C,
                    "), got ", mean.size(), " and ", std_dev.size());
  const at::ScalarType out_type = uint8 ? at::kFloat : first.scalar_type();
  ResizeParams p;
  p.dtype = scalar_kind(out_type, "fastmask.preprocess_images: images");
  p.src_uint8 = uint8;
  const c10::OptionalDeviceGuard device_guard(first.device());

  TORCH_CHECK_VALUE(C <= kMaxNormalisedChannels, "fastmask.preprocess_images: at most ", kMaxNormalisedChannels,
                    " channels are supported, got ", C);
  p.normalise = true;
  p.torch_fused = torch_kernels_fused();
  std::copy(mean.begin(), mean.end(), p.mean);
  std::copy(std_dev.begin(), std_dev.end(), p.std);

  at::Tensor batch = at::empty({B, C, height, width}, first.options().dtype(out_type));
  if (batch.is_cpu()) advise_huge_pages(batch.data_ptr(), batch.nbytes());
  p.batch = 1;
  p.channels = C;
  p.canvas_height = height;
  p.canvas_width = width;
  std::vector<ResizeParams> jobs(B, p);
  for (int64_t i = 0; i < B; ++i) {
    ResizeParams& job = jobs[i];
    const at::Tensor& im = images[i];
    job.src = im.const_data_ptr();
    if (uint8) {  // [H, W, C]
      job.in_height = im.size(0), job.in_width = im.size(1);
      set_strides(job.src_stride, 0, im.stride(2), im.stride(0), im.stride(1));
    } else {
      job.in_height = im.size(1), job.in_width = im.size(2);
      set_strides(job.src_stride, 0, im.stride(0), im.stride(1), im.stride(2));
    }
    job.out_height = sizes[2 * i];
    job.out_width = sizes[2 * i + 1];
    // torchvision resizes the normalised image[None], which keeps the image's layout.
    const at::Tensor as_nchw = (uint8 ? im.permute({2, 0, 1}) : im).unsqueeze(0);
    job.torch_four_tap = interpolate_takes_four_tap(as_nchw, job.out_height, job.out_width);
    at::Tensor out = batch.select(0, i);
    job.dst = out.data_ptr();
    set_strides(job.dst_stride, 0, out.stride(0), out.stride(1), out.stride(2));
  }
  kernel(jobs.data(), B);
  return batch;
}

TORCH_LIBRARY_IMPL(fastmask, CPU, m) { ResizeOps<resize_bilinear_cpu>::register_impls(m); }

}  // namespace fastmask
