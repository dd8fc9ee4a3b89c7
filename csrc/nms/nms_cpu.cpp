// Greedy NMS on the CPU: single image, class-aware, many images in one call.
//
// The IoU of two boxes is computed with torchvision's expression, operation by
// operation in the box dtype, so the kept set and its order equal
// torchvision's bit for bit. What differs is the work:
//  - boxes are visited in score order from structure-of-arrays copies, and a
//    kept box tests all later candidates in one branch-free, vectorised sweep;
//  - the sweep is blocked: once the kept boxes of a block of candidates are
//    known, their sweeps over the rest run in parallel, and the candidates
//    still alive are compacted so suppressed boxes cost nothing later;
//  - classes (and images) are independent problems: no coordinate-offset
//    trick, no quadratic cost over all classes together, run in parallel.
#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

#include "common/parallel.h"
#include "nms_cpu.h"
#include "nms_registration.h"
#include "nms_threshold.h"

namespace fastmask {
namespace {

// The IoU against the threshold: one compare per pair in the type the IoU is
// computed in (nms_threshold.h, shared with the CUDA kernel), so the sweep vectorises.
template <typename T>
struct Exceeds {
  T t;
  explicit Exceeds(double threshold) : t(threshold_in<T>(threshold)) {}
  bool operator()(T ovr) const { return ovr > t; }
};

template <typename H>  // c10::Half, c10::BFloat16: every value is a float
struct ExceedsReduced {
  float t;
  explicit ExceedsReduced(double threshold) : t(threshold_in<float>(threshold)) {}
  bool operator()(H ovr) const { return static_cast<float>(ovr) > t; }
};

template <typename T>
using ExceedsFor = std::conditional_t<std::is_floating_point_v<T>, Exceeds<T>, ExceedsReduced<T>>;

template <typename T>
struct Candidates {
  // Alive candidates of one problem, in score order (structure of arrays).
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<int64_t> position;  // position in the image's score order
  std::vector<uint8_t> suppressed;

  void resize(size_t n) {
    x1.resize(n), y1.resize(n), x2.resize(n), y2.resize(n), area.resize(n);
    position.resize(n), suppressed.assign(n, 0);
  }
};

// Marks the candidates j in [begin, end) whose IoU with box i exceeds the
// threshold. torchvision's expression; std::max/min spelled out so the
// compiler can vectorise them without changing NaN behaviour.
template <typename T, typename Cmp>
inline void sweep(const Candidates<T>& c, size_t i, size_t begin, size_t end, Cmp exceeds, uint8_t* suppressed) {
  const T ix1 = c.x1[i], iy1 = c.y1[i], ix2 = c.x2[i], iy2 = c.y2[i], iarea = c.area[i];
  const T zero = static_cast<T>(0);
  const T* x1 = c.x1.data();
  const T* y1 = c.y1.data();
  const T* x2 = c.x2.data();
  const T* y2 = c.y2.data();
  const T* area = c.area.data();
#pragma omp simd
  for (size_t j = begin; j < end; ++j) {
    const T xx1 = ix1 < x1[j] ? x1[j] : ix1;
    const T yy1 = iy1 < y1[j] ? y1[j] : iy1;
    const T xx2 = x2[j] < ix2 ? x2[j] : ix2;
    const T yy2 = y2[j] < iy2 ? y2[j] : iy2;
    const T dw = xx2 - xx1, dh = yy2 - yy1;
    const T w = zero < dw ? dw : zero;
    const T h = zero < dh ? dh : zero;
    const T inter = w * h;
    const T ovr = inter / (iarea + area[j] - inter);
    suppressed[j] |= static_cast<uint8_t>(exceeds(ovr));
  }
}

constexpr size_t kBlock = 256;       // candidates resolved serially before a parallel sweep
constexpr size_t kParallelWork = 1 << 16;  // pair tests below which a sweep stays on one thread

// Greedy NMS of one problem. `c` holds its candidates in score order; returns
// the positions of the kept boxes, in score order.
template <typename T>
std::vector<int64_t> greedy_nms(Candidates<T>& c, double threshold, int64_t max_keep, bool parallel) {
  const ExceedsFor<T> exceeds(threshold);
  std::vector<int64_t> kept;
  std::vector<size_t> block_kept;
  size_t n = c.position.size();
  size_t begin = 0;
  while (begin < n && static_cast<int64_t>(kept.size()) < max_keep) {
    const size_t end = std::min(n, begin + kBlock);
    block_kept.clear();
    for (size_t i = begin; i < end && static_cast<int64_t>(kept.size()) < max_keep; ++i) {
      if (c.suppressed[i]) continue;
      kept.push_back(c.position[i]);
      block_kept.push_back(i);
      sweep(c, i, i + 1, end, exceeds, c.suppressed.data());
    }
    if (end == n || static_cast<int64_t>(kept.size()) >= max_keep) break;
    // The block's kept boxes against every later candidate.
    const size_t work = block_kept.size() * (n - end);
    const int64_t grain = parallel && work >= kParallelWork ? 2048 : static_cast<int64_t>(n - end);
    parallel_for(static_cast<int64_t>(end), static_cast<int64_t>(n), grain, [&](int64_t j0, int64_t j1) {
      for (size_t i : block_kept) sweep(c, i, static_cast<size_t>(j0), static_cast<size_t>(j1), exceeds, c.suppressed.data());
    });
    // Compact the survivors to the front of the rest: suppressed boxes are never tested again.
    size_t out = end;
    for (size_t j = end; j < n; ++j) {
      if (c.suppressed[j]) continue;
      if (out != j) {
        c.x1[out] = c.x1[j], c.y1[out] = c.y1[j], c.x2[out] = c.x2[j], c.y2[out] = c.y2[j];
        c.area[out] = c.area[j], c.position[out] = c.position[j];
      }
      c.suppressed[out++] = 0;
    }
    n = out;
    begin = end;
  }
  return kept;
}

// Boxes [positions] of one image into a problem. Invalid boxes are left out:
// they are never kept and never suppress.
template <typename T>
void gather(const NmsParams& p, int64_t image, const std::vector<int64_t>& positions, Candidates<T>& c) {
  const T* boxes = static_cast<const T*>(p.boxes) + image * p.num_boxes * 4;
  const bool* valid = p.valid ? p.valid + image * p.num_boxes : nullptr;
  size_t n = 0;
  c.resize(positions.size());
  for (int64_t pos : positions) {
    if (valid && !valid[pos]) continue;
    const T* b = boxes + pos * 4;
    c.x1[n] = b[0], c.y1[n] = b[1], c.x2[n] = b[2], c.y2[n] = b[3];
    c.area[n] = (b[2] - b[0]) * (b[3] - b[1]);  // torchvision's areas, in T
    c.position[n++] = pos;
  }
  c.resize(n);
}

struct Problem {
  int64_t image;
  std::vector<int64_t> positions;  // in score order
};

template <typename T>
void run(const NmsParams& p) {
  const int64_t B = p.num_images, N = p.num_boxes, M = p.max_output;
  // One problem per (image, class): classes never suppress each other.
  std::vector<Problem> problems;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> positions(N);
    std::iota(positions.begin(), positions.end(), 0);
    if (!p.classes) {
      problems.push_back({b, std::move(positions)});
      continue;
    }
    const int64_t* cls = p.classes + b * N;
    std::stable_sort(positions.begin(), positions.end(), [cls](int64_t a, int64_t c) { return cls[a] < cls[c]; });
    for (size_t s = 0; s < positions.size();) {
      size_t e = s;
      while (e < positions.size() && cls[positions[e]] == cls[positions[s]]) ++e;
      problems.push_back({b, std::vector<int64_t>(positions.begin() + s, positions.begin() + e)});
      s = e;
    }
  }
  // Kept flags per image position; big problems parallelise inside, small ones across.
  std::vector<uint8_t> kept(B * N, 0);
  auto solve = [&](const Problem& pr, bool parallel) {
    Candidates<T> c;
    gather(p, pr.image, pr.positions, c);
    for (int64_t pos : greedy_nms(c, p.iou_threshold, M, parallel)) kept[pr.image * N + pos] = 1;
  };
  std::vector<size_t> small;
  for (size_t i = 0; i < problems.size(); ++i) {
    if (problems[i].positions.size() >= 4 * kBlock)
      solve(problems[i], true);
    else
      small.push_back(i);
  }
  parallel_for(0, static_cast<int64_t>(small.size()), 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) solve(problems[small[s]], false);
  });
  // Kept boxes of each image in score order (across classes), as original indices.
  parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      int64_t count = 0;
      int64_t* keep = p.keep + b * M;
      for (int64_t pos = 0; pos < N && count < M; ++pos)
        if (kept[b * N + pos]) keep[count++] = p.order[b * N + pos];
      std::fill(keep + count, keep + M, int64_t(-1));
      p.counts[b] = count;
    }
  });
}

}  // namespace

void multi_image_nms_cpu(const SortedNmsInputs& inputs) {
  const NmsParams& p = inputs.params;
  switch (p.dtype) {
    case ScalarKind::kFloat32: return run<float>(p);
    case ScalarKind::kFloat64: return run<double>(p);
    case ScalarKind::kFloat16: return run<c10::Half>(p);
    case ScalarKind::kBFloat16: return run<c10::BFloat16>(p);
  }
}

namespace {
NmsKernel cpu_nms_kernel() { return multi_image_nms_cpu; }
}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, CPU, m) { NmsOps<cpu_nms_kernel>::register_impls(m); }

}  // namespace fastmask
