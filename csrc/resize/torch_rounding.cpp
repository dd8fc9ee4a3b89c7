#include "torch_rounding.h"

#include <array>
#include <cstring>
#include <vector>

#include "common/stable_aten.h"

namespace fastmask {
namespace {

// PyTorch's separable kernel (a 1-channel NCHW input, output height + width > 128) or its
// channels-last one (9 channels_last channels: vector lanes and the scalar remainder), upsampling
// 13 x 11 to 100 x 90: steps whose source indices and blends round differently when fused.
BilinearRounding probe(bool four_tap) {
  const int64_t C = four_tap ? 9 : 1, H = 13, W = 11, OH = 100, OW = 90;
  std::vector<float> values(C * H * W);
  uint32_t state = 12345;
  for (float& v : values) {  // values in [0, 1) with full mantissas
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(state >> 8) / 16777216.0f;
  }
  // Stored NHWC for the channels-last kernel, NCHW for the separable one.
  const int64_t sizes[4] = {1, C, H, W};
  const std::array<int64_t, 4> strides = four_tap ? std::array<int64_t, 4>{C * H * W, 1, W * C, C}
                                                  : std::array<int64_t, 4>{C * H * W, H * W, W, 1};
  const Tensor input = torch::stable::from_blob(values.data(), sizes, strides, Device(DeviceType::CPU),
                                                ScalarType::Float);
  const int64_t out_size[2] = {OH, OW};
  const Tensor expected = aten::contiguous(
      aten::tensor_op("aten::upsample_bilinear2d", "", input, IntArrayRef(out_size), false,
                      std::optional<double>(), std::optional<double>()),
      memory_format(four_tap));
  const float* torch_values = static_cast<const float*>(expected.const_data_ptr());

  ResizeParams p;
  p.src = values.data();
  p.batch = 1, p.channels = C, p.in_height = H, p.in_width = W;
  std::copy(strides.begin(), strides.end(), p.src_stride);
  p.out_height = p.canvas_height = OH;
  p.out_width = p.canvas_width = OW;
  const int64_t out_strides[4] = {C * OH * OW, four_tap ? 1 : OH * OW, four_tap ? OW * C : OW, four_tap ? C : 1};
  std::copy(out_strides, out_strides + 4, p.dst_stride);
  p.torch_four_tap = four_tap;
  std::vector<float> ours(C * OH * OW);
  p.dst = ours.data();
  for (const bool blend_fused : {true, false}) {
    for (const bool index_fused : {true, false}) {
      const BilinearRounding candidate{index_fused, blend_fused};
      resize_bilinear_cpu(&p, 1, TorchBilinearRounding{candidate, candidate});
      if (std::memcmp(ours.data(), torch_values, ours.size() * sizeof(float)) == 0) return candidate;
    }
  }
  // A rounding fastmask does not know: results will be within an ulp of torch's, not equal.
  return BilinearRounding{};
}

}  // namespace

const TorchBilinearRounding& torch_bilinear_rounding() {
  static const TorchBilinearRounding rounding{probe(false), probe(true)};
  return rounding;
}

}  // namespace fastmask
