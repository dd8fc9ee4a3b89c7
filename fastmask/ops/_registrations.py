"""Fake (meta) kernels, autograd formulas and autocast kernels for the ops of fastmask's op
libraries, and CUDA kernels that explain why CUDA cannot run where the CUDA library is not loaded.

Registered in Python, as pytorch/extension-cpp does, so torch.compile, fake tensors, autograd and
autocast see every op (the op libraries use PyTorch's stable ABI, which registers plain kernels
only). Each registration is separate: one that fails (say, on a newer torch) does not stop the
others or `import fastmask`.
"""
import warnings

import torch

from .. import _loader
from ._checks import is_channels_last
from .box_coder import decode_reference, encode_reference

_lib = "fastmask::"


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _safely(register):
    try:
        register()
    except Exception as exc:  # noqa: BLE001 - keep the rest of the package importable
        warnings.warn(f"fastmask: could not register {register.__name__}: {exc}", RuntimeWarning)


def _roi_align():
    @torch.library.register_fake(_lib + "roi_align")
    def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, deterministic=False):
        torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "rois must be [K, 5]")
        out = input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))
        return out.contiguous(memory_format=_memory_format(is_channels_last(input)))

    @torch.library.register_fake(_lib + "roi_align_backward")
    def _(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
          sampling_ratio, aligned, channels_last, deterministic):
        out = grad.new_empty((batch_size, channels, height, width))
        return out.contiguous(memory_format=_memory_format(channels_last))

    def setup_context(ctx, inputs, output):
        input, rois, spatial_scale, ph, pw, sampling_ratio, aligned, deterministic = inputs
        ctx.save_for_backward(rois)
        ctx.args = (spatial_scale, ph, pw, *input.shape, sampling_ratio, aligned,
                    is_channels_last(input), deterministic)

    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned, channels_last, deterministic = ctx.args
        grad_input = torch.ops.fastmask.roi_align_backward(
            grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned, channels_last,
            deterministic or torch.are_deterministic_algorithms_enabled())
        return grad_input, None, None, None, None, None, None, None

    torch.library.register_autograd(_lib + "roi_align", backward, setup_context=setup_context)


def _multi_level_roi_align():
    @torch.library.register_fake(_lib + "multi_level_roi_align")
    def _(features, rois, levels, spatial_scales, pooled_height, pooled_width, sampling_ratio, aligned,
          deterministic=False):
        first = features[0]
        out = first.new_empty((rois.shape[0], first.shape[1], pooled_height, pooled_width))
        return out.contiguous(memory_format=_memory_format(is_channels_last(first)))

    @torch.library.register_fake(_lib + "multi_level_roi_align_backward")
    def _(grad, rois, levels, spatial_scales, heights, widths, batch_size, channels, pooled_height,
          pooled_width, sampling_ratio, aligned, channels_last, deterministic):
        fmt = _memory_format(channels_last)
        return [grad.new_empty((batch_size, channels, h, w)).contiguous(memory_format=fmt)
                for h, w in zip(heights, widths)]

    def setup_context(ctx, inputs, output):
        features, rois, levels, spatial_scales, ph, pw, sampling_ratio, aligned, deterministic = inputs
        ctx.save_for_backward(rois, levels)
        ctx.args = (spatial_scales, [f.shape[2] for f in features], [f.shape[3] for f in features],
                    features[0].shape[0], features[0].shape[1], ph, pw, sampling_ratio, aligned,
                    is_channels_last(features[0]), deterministic)

    def backward(ctx, grad):
        rois, levels = ctx.saved_tensors
        *args, deterministic = ctx.args
        grads = torch.ops.fastmask.multi_level_roi_align_backward(
            grad, rois, levels, *args, deterministic or torch.are_deterministic_algorithms_enabled())
        # One gradient per argument the caller passed (torch < 2.14 rejects more for a Tensor[] op,
        # and the dispatcher drops a defaulted `deterministic`).
        return (list(grads), None, None, None, None, None, None, None, None)[:len(ctx.needs_input_grad)]

    torch.library.register_autograd(_lib + "multi_level_roi_align", backward, setup_context=setup_context)


def _nms():
    def dynamic_keep(boxes):
        # The number of kept boxes depends on the data.
        return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)

    @torch.library.register_fake(_lib + "nms")
    def _(boxes, scores, iou_threshold):
        return dynamic_keep(boxes)

    @torch.library.register_fake(_lib + "batched_nms")
    def _(boxes, scores, idxs, iou_threshold):
        return dynamic_keep(boxes)

    @torch.library.register_fake(_lib + "multi_image_nms")
    def _(boxes, scores, idxs, valid, iou_threshold, max_output):
        keep = boxes.new_empty((boxes.shape[0], max_output), dtype=torch.int64)
        return keep, boxes.new_empty((boxes.shape[0],), dtype=torch.int64)


def _vjp(reference, grad, inputs, needs_grad, *args):
    """Gradients of `reference(*inputs, *args)` against `grad`, for the inputs that need one."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(need) for x, need in zip(inputs, needs_grad)]
        wanted = [x for x in leaves if x.requires_grad]
        grads = iter(torch.autograd.grad(reference(*leaves, *args), wanted, grad) if wanted else ())
    return [next(grads) if x.requires_grad else None for x in leaves]


def _rpn():
    @torch.library.register_fake(_lib + "grid_anchors")
    def _(cell_anchors, grid_sizes, strides, num_images):
        total = sum(grid_sizes[2 * i] * grid_sizes[2 * i + 1] * c.shape[0] for i, c in enumerate(cell_anchors))
        return cell_anchors[0].new_empty((num_images, total, 4))

    @torch.library.register_fake(_lib + "decode_boxes")
    def _(rel_codes, boxes, weights, bbox_xform_clip):
        return torch.empty_like(rel_codes, memory_format=torch.contiguous_format)

    @torch.library.register_fake(_lib + "encode_boxes")
    def _(reference_boxes, proposals, weights):
        return reference_boxes.new_empty(reference_boxes.shape)

    @torch.library.register_fake(_lib + "generate_proposals")
    def _(objectness, pred_bbox_deltas, cell_anchors, strides, image_sizes, pre_nms_top_n, post_nms_top_n,
          nms_thresh, score_thresh, min_size, weights, bbox_xform_clip):
        first = objectness[0]
        batch = first.shape[0]
        return (first.new_empty((batch, post_nms_top_n, 4)), first.new_empty((batch, post_nms_top_n)),
                first.new_empty((batch,), dtype=torch.int64))

    def setup_decode(ctx, inputs, output):
        rel_codes, boxes, weights, clip = inputs
        ctx.save_for_backward(rel_codes, boxes)
        ctx.args = (weights, clip)

    def backward_decode(ctx, grad):
        grads = _vjp(decode_reference, grad, ctx.saved_tensors, ctx.needs_input_grad[:2], *ctx.args)
        return grads[0], grads[1], None, None

    torch.library.register_autograd(_lib + "decode_boxes", backward_decode, setup_context=setup_decode)

    def setup_encode(ctx, inputs, output):
        reference_boxes, proposals, weights = inputs
        ctx.save_for_backward(reference_boxes, proposals)
        ctx.weights = weights

    def backward_encode(ctx, grad):
        grads = _vjp(encode_reference, grad, ctx.saved_tensors, ctx.needs_input_grad[:2], ctx.weights)
        return grads[0], grads[1], None

    torch.library.register_autograd(_lib + "encode_boxes", backward_encode, setup_context=setup_encode)


def _resize():
    # Inference ops: no autograd formulas.
    @torch.library.register_fake(_lib + "resize_bilinear")
    def _(input, out_height, out_width, scale_factor_h=None, scale_factor_w=None):
        out = input.new_empty((input.shape[0], input.shape[1], out_height, out_width))
        return out.contiguous(memory_format=_memory_format(is_channels_last(input)))

    @torch.library.register_fake(_lib + "preprocess_images")
    def _(images, sizes, mean, std, height, width):
        first = images[0]
        uint8 = first.dtype == torch.uint8
        channels = first.shape[2] if uint8 else first.shape[0]
        return first.new_empty((len(images), channels, height, width), dtype=torch.float32 if uint8 else first.dtype)

    @torch.library.register_fake(_lib + "paste_masks_in_image")
    def _(masks, boxes, height, width, padding=1, threshold=None):
        dtype = torch.bool if threshold is not None else masks.dtype
        return masks.new_empty((masks.shape[0], 1, height, width), dtype=dtype)


def _autocast():
    """As torchvision registers its own: inside an autocast region, floating inputs (but float64)
    on the region's device are cast to float32 and the op runs with autocast excluded; a pooled
    output is cast back to the features' dtype, NMS returns its int64 indices. So NMS of
    bf16/fp16 boxes under autocast computes the IoU in float32, as torchvision does. Outside
    autocast the ops keep their native fp16/bf16 paths. The casts are ordinary differentiable
    ops, so gradients still reach the inputs."""
    for device, key in (("cpu", "AutocastCPU"), ("cuda", "AutocastCUDA")):
        _register_autocast(device, key)


def _register_autocast(device: str, key: str):
    excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))
    ops = torch.ops.fastmask

    def to_float(x):  # at::autocast::cached_cast's rule
        floating = isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64
        if floating and x.device.type == device:
            return x.float()
        return x

    def roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
                  deterministic=False):
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            out = ops.roi_align(to_float(input), to_float(rois), spatial_scale, pooled_height, pooled_width,
                                sampling_ratio, aligned, deterministic)
        return out.to(input.dtype)

    def multi_level_roi_align(features, rois, levels, spatial_scales, pooled_height, pooled_width, sampling_ratio,
                              aligned, deterministic=False):
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            out = ops.multi_level_roi_align([to_float(f) for f in features], to_float(rois), levels, spatial_scales,
                                            pooled_height, pooled_width, sampling_ratio, aligned, deterministic)
        return out.to(features[0].dtype)  # the op has rejected an empty list

    def nms(boxes, scores, iou_threshold):
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            return ops.nms(to_float(boxes), to_float(scores), iou_threshold)

    def batched_nms(boxes, scores, idxs, iou_threshold):
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            return ops.batched_nms(to_float(boxes), to_float(scores), idxs, iou_threshold)

    def multi_image_nms(boxes, scores, idxs, valid, iou_threshold, max_output):
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            return ops.multi_image_nms(to_float(boxes), to_float(scores), idxs, valid, iou_threshold, max_output)

    for kernel in (roi_align, multi_level_roi_align, nms, batched_nms, multi_image_nms):
        _library.impl(kernel.__name__, kernel, key)


_OPS = ("roi_align", "roi_align_backward", "multi_level_roi_align", "multi_level_roi_align_backward",
        "nms", "batched_nms", "multi_image_nms", "grid_anchors", "decode_boxes", "encode_boxes",
        "generate_proposals", "resize_bilinear", "preprocess_images", "paste_masks_in_image")


def _cuda_stubs():
    """Where the CUDA op library is not loaded (a CPU-only build, a torch without CUDA or with
    another CUDA major version), CUDA kernels that say why and what to install, instead of the
    dispatcher's "could not run ... with arguments from the 'CUDA' backend"."""
    reason = _loader._state["cuda_error"]

    def raise_no_cuda(*args, **kwargs):
        raise _loader.FastmaskBuildError(reason)

    for op in _OPS:
        _library.impl(op, raise_no_cuda, "CUDA")


# Kept for the life of the process: the registrations made through it last as long as it does.
_library = torch.library.Library("fastmask", "IMPL")

if _loader._state["ext"] is not None:  # without the op library there are no ops to register for
    for _register in (_roi_align, _multi_level_roi_align, _nms, _rpn, _resize, _autocast):
        _safely(_register)
    if _loader._state["cuda_error"] is not None:
        _safely(_cuda_stubs)
