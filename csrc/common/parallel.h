// The CPU kernels' thread pool: PyTorch's (at::parallel_for, through the stable ABI), so they
// share torch's threads, honour torch.set_num_threads and split work as ATen does.
#pragma once

#include <torch/csrc/stable/ops.h>

#include <cstdint>

namespace fastmask {

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain_size, const F& f) {
  torch::stable::parallel_for(begin, end, grain_size, f);
}

inline int64_t num_threads() { return static_cast<int64_t>(torch::stable::get_num_threads()); }

}  // namespace fastmask
