#include "bucket_rois_host.h"

#include "common/stable_aten.h"
#include "roi_align/roi_align.h"

namespace fastmask_test {
namespace {

std::vector<int64_t> values(const fastmask::Tensor& t) {
  const fastmask::Tensor c = fastmask::aten::contiguous(t);
  const int64_t* data = static_cast<const int64_t*>(c.const_data_ptr());
  return std::vector<int64_t>(data, data + c.numel());
}

}  // namespace

void bucket_rois_host(const void* rois, bool float64, int64_t num_rois, const int64_t* levels, int64_t batch_size,
                      int64_t num_levels, std::vector<int64_t>& order, std::vector<int64_t>& begin) {
  using fastmask::Device;
  using fastmask::DeviceType;
  using fastmask::ScalarType;
  const int64_t roi_sizes[2] = {num_rois, 5}, roi_strides[2] = {5, 1};
  const int64_t level_sizes[1] = {num_rois}, level_strides[1] = {1};
  const fastmask::Tensor roi_tensor = torch::stable::from_blob(const_cast<void*>(rois), roi_sizes, roi_strides,
                                                               Device(DeviceType::CPU),
                                                               float64 ? ScalarType::Double : ScalarType::Float);
  const fastmask::Tensor level_tensor = torch::stable::from_blob(const_cast<int64_t*>(levels), level_sizes,
                                                                 level_strides, Device(DeviceType::CPU),
                                                                 ScalarType::Long);
  const fastmask::RoIBuckets buckets = fastmask::bucket_rois(roi_tensor, level_tensor, batch_size, num_levels);
  order = values(buckets.order);
  begin = values(buckets.begin);
}

}  // namespace fastmask_test
