// Where a mask lands in the image and which pixel of its padded mask each
// output pixel samples, following torchvision's paste_mask_in_image: the mask,
// padded by `padding` zeros, is resized (F.interpolate, bilinear,
// align_corners=False) to the integer box, (x1 - x0 + 1) x (y1 - y0 + 1) at
// least 1 x 1, and the part inside the image is copied. Boxes partly or wholly
// outside the image are clipped (torchvision raises for wholly outside ones).
#pragma once

#include "common/linear_interp.h"
#include "paste_params.h"

namespace fastmask {

template <typename A>
struct PasteBox {
  int64_t x0, y0;              // box corner in the image (the resized mask's pixel 0, 0)
  int64_t box_h, box_w;        // resized mask size
  int64_t row_begin, row_end;  // image rows written, [begin, end)
  int64_t col_begin, col_end;  // image columns written
  A step_h, step_w;            // source step of the resize
};

// [begin, end) clipped to [0, size), empty (begin == end) when they do not meet.
FASTMASK_HOST_DEVICE void clip_span(int64_t begin, int64_t end, int64_t size, int64_t& out_begin, int64_t& out_end) {
  out_begin = begin < 0 ? 0 : (begin > size ? size : begin);
  out_end = end > size ? size : (end < out_begin ? out_begin : end);
}

template <typename A>
FASTMASK_HOST_DEVICE PasteBox<A> paste_box(const PasteParams& p, int64_t n) {
  const int64_t* b = p.boxes + 4 * n;
  PasteBox<A> g;
  g.x0 = b[0], g.y0 = b[1];
  g.box_w = b[2] - b[0] + 1 > 1 ? b[2] - b[0] + 1 : 1;
  g.box_h = b[3] - b[1] + 1 > 1 ? b[3] - b[1] + 1 : 1;
  clip_span(b[0], b[2] + 1, p.width, g.col_begin, g.col_end);
  clip_span(b[1], b[3] + 1, p.height, g.row_begin, g.row_end);
  g.step_h = source_step<A>(p.mask_height + 2 * p.padding, g.box_h, 0.0);
  g.step_w = source_step<A>(p.mask_width + 2 * p.padding, g.box_w, 0.0);
  return g;
}

}  // namespace fastmask
