#include "resize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/huge_pages.h"
#include "common/linear_interp.h"
#include "common/parallel.h"
#include "common/scalar_kind_torch.h"
#include "common/stable_aten.h"

namespace fastmask {
namespace {

void set_strides(int64_t (&out)[4], int64_t n, int64_t c, int64_t y, int64_t x) {
  out[0] = n, out[1] = c, out[2] = y, out[3] = x;
}

// Whether F.interpolate would take PyTorch's channels-last kernel for an input of these sizes
// and strides (as torch passes it to the kernel) and output size, now.
bool interpolate_takes_four_tap(IntArrayRef sizes, IntArrayRef strides, int64_t out_height, int64_t out_width) {
  return torch_takes_four_tap(is_channels_last_contiguous(sizes, strides), sizes[1], out_height, out_width,
                              num_threads() == 1);
}

void check_scale_factor(std::optional<double> s, const char* name) {
  FASTMASK_CHECK_VALUE(!s || std::isfinite(*s), "fastmask.resize_bilinear: ", name, " must be finite, got ", *s);
}

}  // namespace

Tensor resize_bilinear(ResizeKernel kernel, const Tensor& input, int64_t out_height, int64_t out_width,
                       std::optional<double> scale_factor_h, std::optional<double> scale_factor_w) {
  FASTMASK_CHECK_VALUE(input.dim() == 4,
                       "fastmask.resize_bilinear: input must be a 4-D [N, C, H, W] tensor, got shape ", shape(input));
  FASTMASK_CHECK_VALUE(input.size(2) > 0 && input.size(3) > 0,
                       "fastmask.resize_bilinear: input height and width must be positive, got ", shape(input));
  FASTMASK_CHECK_VALUE(out_height > 0 && out_width > 0, "fastmask.resize_bilinear: the output size must be positive, got (",
                       out_height, ", ", out_width, ")");
  check_scale_factor(scale_factor_h, "scale_factor_h");
  check_scale_factor(scale_factor_w, "scale_factor_w");
  ResizeParams p;
  p.src_uint8 = p.dst_uint8 = input.scalar_type() == ScalarType::Byte;
  if (!p.src_uint8) p.dtype = scalar_kind(input.scalar_type(), "fastmask.resize_bilinear: input");
  const DeviceScope device_scope(input);

  // channels_last when the input is (and is not also plain contiguous), as the other ops.
  Tensor output = aten::empty({input.size(0), input.size(1), out_height, out_width}, input.scalar_type(),
                              input.device(), memory_format(is_channels_last(input)));
  if (output.numel() == 0) return output;
  p.src = input.const_data_ptr();
  p.batch = input.size(0), p.channels = input.size(1), p.in_height = input.size(2), p.in_width = input.size(3);
  set_strides(p.src_stride, input.stride(0), input.stride(1), input.stride(2), input.stride(3));
  p.out_height = p.canvas_height = out_height;
  p.out_width = p.canvas_width = out_width;
  p.scale_factor_h = scale_factor_h.value_or(0.0);
  p.scale_factor_w = scale_factor_w.value_or(0.0);
  p.torch_four_tap = !p.dst_uint8 && interpolate_takes_four_tap(input.sizes(), input.strides(), out_height, out_width);
  p.dst = output.mutable_data_ptr();
  if (output.is_cpu()) advise_huge_pages(p.dst, nbytes(output));
  set_strides(p.dst_stride, output.stride(0), output.stride(1), output.stride(2), output.stride(3));
  kernel(&p, 1);
  return output;
}

Tensor preprocess_images(ResizeKernel kernel, const TensorList& images, IntArrayRef sizes, DoubleArrayRef mean,
                         DoubleArrayRef std_dev, int64_t height, int64_t width) {
  const int64_t B = static_cast<int64_t>(images.size());
  FASTMASK_CHECK_VALUE(B > 0, "fastmask.preprocess_images: images must not be empty");
  FASTMASK_CHECK_VALUE(static_cast<int64_t>(sizes.size()) == 2 * B, "fastmask.preprocess_images: sizes must hold ",
                       "(height, width) of each of the ", B, " images, got ", sizes.size(), " values");
  FASTMASK_CHECK_VALUE(height > 0 && width > 0, "fastmask.preprocess_images: the batch size (", height, ", ", width,
                       ") must be positive");
  const Tensor& first = images[0];
  const bool uint8 = first.scalar_type() == ScalarType::Byte;
  for (int64_t i = 0; i < B; ++i) {
    const Tensor& im = images[i];
    FASTMASK_CHECK_VALUE(im.dim() == 3, "fastmask.preprocess_images: images[", i, "] must be 3-D (",
                         uint8 ? "[H, W, C] uint8" : "[C, H, W] floating", "), got shape ", shape(im));
    FASTMASK_CHECK_TYPE(im.scalar_type() == first.scalar_type(), "fastmask.preprocess_images: images[", i, "] is ",
                        im.scalar_type(), " but images[0] is ", first.scalar_type(), "; all images need one dtype");
    FASTMASK_CHECK_VALUE(im.device() == first.device(), "fastmask.preprocess_images: images[", i, "] is on ",
                         im.device(), " but images[0] is on ", first.device());
    FASTMASK_CHECK_VALUE(im.size(uint8 ? 2 : 0) == first.size(uint8 ? 2 : 0), "fastmask.preprocess_images: images[", i,
                         "] has ", im.size(uint8 ? 2 : 0), " channels but images[0] has ", first.size(uint8 ? 2 : 0));
    FASTMASK_CHECK_VALUE(im.numel() > 0, "fastmask.preprocess_images: images[", i, "] is empty, shape ", shape(im));
    FASTMASK_CHECK_VALUE(sizes[2 * i] > 0 && sizes[2 * i + 1] > 0 && sizes[2 * i] <= height && sizes[2 * i + 1] <= width,
                         "fastmask.preprocess_images: the resized size (", sizes[2 * i], ", ", sizes[2 * i + 1],
                         ") of images[", i, "] must be positive and fit the batch (", height, ", ", width, ")");
  }
  const int64_t C = first.size(uint8 ? 2 : 0);
  FASTMASK_CHECK_VALUE(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std_dev.size()) == C,
                       "fastmask.preprocess_images: image_mean and image_std need one value per channel (", C,
                       "), got ", mean.size(), " and ", std_dev.size());
  const ScalarType out_type = uint8 ? ScalarType::Float : first.scalar_type();
  ResizeParams p;
  p.dtype = scalar_kind(out_type, "fastmask.preprocess_images: images");
  p.src_uint8 = uint8;
  const DeviceScope device_scope(first);

  FASTMASK_CHECK_VALUE(C <= kMaxNormalisedChannels, "fastmask.preprocess_images: at most ", kMaxNormalisedChannels,
                       " channels are supported, got ", C);
  p.normalise = true;
  std::copy(mean.begin(), mean.end(), p.mean);
  std::copy(std_dev.begin(), std_dev.end(), p.std);

  Tensor batch = aten::empty({B, C, height, width}, out_type, first.device());
  char* batch_data = static_cast<char*>(batch.mutable_data_ptr());
  if (batch.is_cpu()) advise_huge_pages(batch_data, nbytes(batch));
  p.batch = 1;
  p.channels = C;
  p.canvas_height = height;
  p.canvas_width = width;
  std::vector<ResizeParams> jobs(B, p);
  for (int64_t i = 0; i < B; ++i) {
    ResizeParams& job = jobs[i];
    const Tensor& im = images[i];
    job.src = im.const_data_ptr();
    // torchvision resizes the normalised image[None], which keeps the image's layout.
    int64_t nchw_sizes[4], nchw_strides[4];
    if (uint8) {  // [H, W, C]
      job.in_height = im.size(0), job.in_width = im.size(1);
      set_strides(job.src_stride, 0, im.stride(2), im.stride(0), im.stride(1));
      set_strides(nchw_sizes, 1, im.size(2), im.size(0), im.size(1));
    } else {
      job.in_height = im.size(1), job.in_width = im.size(2);
      set_strides(job.src_stride, 0, im.stride(0), im.stride(1), im.stride(2));
      set_strides(nchw_sizes, 1, im.size(0), im.size(1), im.size(2));
    }
    // image[None] (unsqueeze) gives the new size-1 batch dimension the stride size * stride of
    // the channels dimension.
    set_strides(nchw_strides, nchw_sizes[1] * job.src_stride[1], job.src_stride[1], job.src_stride[2],
                job.src_stride[3]);
    job.out_height = sizes[2 * i];
    job.out_width = sizes[2 * i + 1];
    job.torch_four_tap = interpolate_takes_four_tap(nchw_sizes, nchw_strides, job.out_height, job.out_width);
    job.dst = batch_data + i * C * height * width * static_cast<int64_t>(batch.element_size());
    set_strides(job.dst_stride, 0, height * width, width, 1);
  }
  kernel(jobs.data(), B);
  return batch;
}

}  // namespace fastmask
