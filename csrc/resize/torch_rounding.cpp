#include "torch_rounding.h"

#include <array>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/scalar_kind_torch.h"
#include "common/stable_aten.h"

namespace fastmask {
namespace {

// PyTorch's separable kernel (a 1-channel NCHW input, output height + width > 128) or its
// channels-last one (9 channels_last channels: vector lanes and the scalar remainder), upsampling
// 13 x 11 to 100 x 90: steps whose source indices and blends round differently when fused.
// T: float or double, whose kernels torch may compile (and so round) differently.
template <typename T>
BilinearRounding probe(bool four_tap) {
  const int64_t C = four_tap ? 9 : 1, H = 13, W = 11, OH = 100, OW = 90;
  std::vector<T> values(C * H * W);
  uint64_t state = 12345;
  for (T& v : values) {  // values in [0, 1) with full mantissas
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<T>(static_cast<double>(state >> 11) / 9007199254740992.0);
  }
  // Stored NHWC for the channels-last kernel, NCHW for the separable one.
  const int64_t sizes[4] = {1, C, H, W};
  const std::array<int64_t, 4> strides = four_tap ? std::array<int64_t, 4>{C * H * W, 1, W * C, C}
                                                  : std::array<int64_t, 4>{C * H * W, H * W, W, 1};
  const Tensor input = torch::stable::from_blob(values.data(), sizes, strides, Device(DeviceType::CPU),
                                                scalar_type_of<T>());
  const int64_t out_size[2] = {OH, OW};
  const Tensor expected = aten::contiguous(
      aten::tensor_op("aten::upsample_bilinear2d", "", input, IntArrayRef(out_size), false,
                      std::optional<double>(), std::optional<double>()),
      memory_format(four_tap));
  const T* torch_values = static_cast<const T*>(expected.const_data_ptr());

  ResizeParams p;
  p.src = values.data();
  p.batch = 1, p.channels = C, p.in_height = H, p.in_width = W;
  std::copy(strides.begin(), strides.end(), p.src_stride);
  p.out_height = p.canvas_height = OH;
  p.out_width = p.canvas_width = OW;
  const int64_t out_strides[4] = {C * OH * OW, four_tap ? 1 : OH * OW, four_tap ? OW * C : OW, four_tap ? C : 1};
  std::copy(out_strides, out_strides + 4, p.dst_stride);
  p.torch_four_tap = four_tap;
  p.dtype = std::is_same_v<T, double> ? ScalarKind::kFloat64 : ScalarKind::kFloat32;
  std::vector<T> ours(C * OH * OW);
  p.dst = ours.data();
  for (const bool blend_fused : {true, false}) {
    for (const bool index_fused : {true, false}) {
      const BilinearRounding candidate{index_fused, blend_fused};
      resize_bilinear_cpu(&p, 1, TorchBilinearRounding{candidate, candidate});
      if (std::memcmp(ours.data(), torch_values, ours.size() * sizeof(T)) == 0) return candidate;
    }
  }
  // A rounding fastmask does not know: results will be within an ulp of torch's, not equal.
  return BilinearRounding{};
}

}  // namespace

const TorchBilinearRounding& torch_bilinear_rounding(ScalarKind dtype) {
  static const TorchBilinearRounding single{probe<float>(false), probe<float>(true)};
  static const TorchBilinearRounding twice{probe<double>(false), probe<double>(true)};
  return dtype == ScalarKind::kFloat64 ? twice : single;
}

namespace {

// Measured when the library loads, from a clean context: a first resize or paste may run under
// a caller's dispatch mode (torch.library.opcheck's schema check, a compiled graph), where torch's
// own upsample_bilinear2d cannot be called on the probe. Should it fail here, the first call
// measures instead (a throwing static initialisation is retried).
const bool rounding_measured_at_load = [] {
  try {
    torch_bilinear_rounding(ScalarKind::kFloat32);
    torch_bilinear_rounding(ScalarKind::kFloat64);
    return true;
  } catch (...) {
    return false;
  }
}();

}  // namespace

}  // namespace fastmask
