"""Converters of ONNX Resize and GridSample."""
from __future__ import annotations

from trident.compiler.errors import ModelError, ShapeError, UnsupportedError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter

_COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                     "asymmetric", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _choice(cx: NodeContext, name: str, default: str, allowed) -> str:
    value = cx.str_attr(name, default)
    if value not in allowed:
        raise cx.error(ModelError, f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _floats(cx: NodeContext, i: int, what: str) -> list[float] | None:
    """A constant float input; None when absent or empty (exporters pass empty roi / scales)."""
    tensor = cx.const(i, what)
    if tensor is None or tensor.numel() == 0:
        return None
    return [float(v) for v in tensor.reshape(-1).tolist()]


def _output_sizes(cx: NodeContext, shape, axes, scales, sizes):
    """Every axis' output size and scale from the scales or the sizes input (ONNX: floor(scale *
    size) for scales; for sizes, keep_aspect_ratio_policy may replace them by one common scale,
    rounding half up)."""
    out, factor = list(shape), [1.0] * len(shape)
    if (scales is None) == (sizes is None):
        raise cx.error(ModelError, "exactly one of 'scales' and 'sizes' must be given")
    given = scales if scales is not None else sizes
    if len(given) != len(axes):
        raise cx.error(ModelError, f"{'scales' if scales is not None else 'sizes'} {given} must "
                                   f"have one value per axis {axes}")
    if scales is not None:
        for axis, s in zip(axes, scales):
            if s <= 0:
                raise cx.error(ModelError, f"scale {s} must be positive")
            factor[axis], out[axis] = s, int(s * shape[axis])
        return out, factor
    policy = _choice(cx, "keep_aspect_ratio_policy", "stretch", _ASPECT_POLICIES)
    ratios = [size / shape[axis] if shape[axis] else 1.0 for axis, size in zip(axes, sizes)]
    if policy != "stretch":
        common = min(ratios) if policy == "not_larger" else max(ratios)
        ratios = [common] * len(axes)
        sizes = [int(common * shape[axis] + 0.5) for axis in axes]
    for axis, size, ratio in zip(axes, sizes, ratios):
        factor[axis], out[axis] = ratio, size
    return out, factor


@converter("Resize", constant_inputs=(1, 2, 3))
def _resize(cx):
    x = cx.input(0)
    shape = cx.static_shape(x, "Resize")
    rank = len(shape)
    axes = cx.axes(cx.ints_attr("axes", list(range(rank))), rank)
    sizes = cx.const_ints(3, "sizes") if cx.has(3) else None
    sizes, scales = _output_sizes(cx, shape, axes, _floats(cx, 2, "scales"), sizes or None)
    coordinate_mode = _choice(cx, "coordinate_transformation_mode", "half_pixel",
                              _COORDINATE_MODES)
    roi = None
    given_roi = _floats(cx, 1, "roi") if cx.has(1) else None
    if coordinate_mode == "tf_crop_and_resize":
        if given_roi is None or len(given_roi) != 2 * len(axes):
            raise cx.error(ModelError, f"tf_crop_and_resize needs a roi of {2 * len(axes)} values")
        roi = [0.0] * rank + [1.0] * rank
        for k, axis in enumerate(axes):
            roi[axis], roi[rank + axis] = given_roi[k], given_roi[len(axes) + k]
    mode = _choice(cx, "mode", "nearest", ("nearest", "linear", "cubic"))
    if any(s == 0 for s in sizes):
        raise cx.error(ShapeError, f"output sizes {sizes} include 0")
    return [cx.emit("resize", x, sizes=sizes, scales=scales, mode=mode,
                    coordinate_transformation_mode=coordinate_mode,
                    nearest_mode=_choice(cx, "nearest_mode", "round_prefer_floor", _NEAREST_MODES),
                    cubic_coeff_a=cx.float_attr("cubic_coeff_a", -0.75),
                    exclude_outside=cx.flag("exclude_outside", 0),
                    extrapolation_value=cx.float_attr("extrapolation_value", 0.0),
                    antialias=cx.flag("antialias", 0) and mode != "nearest", roi=roi)]


_GRID_MODES = {"bilinear": "linear", "bicubic": "cubic", "linear": "linear", "cubic": "cubic",
               "nearest": "nearest"}


@converter("GridSample", since=16)
def _grid_sample(cx):
    x, grid = cx.input(0), cx.input(1)
    default = "bilinear" if cx.opset < 20 else "linear"
    mode = _GRID_MODES.get(cx.str_attr("mode", default))
    if mode is None:
        raise cx.error(ModelError, f"mode {cx.str_attr('mode', default)!r} is not a GridSample mode")
    rank = cx.type_of(x).rank
    if rank not in (4, 5) or (rank == 5 and mode == "cubic"):
        raise cx.error(UnsupportedError, f"GridSample of a {rank}-D input in {mode} mode "
                                         f"(trident samples 4-D, and 5-D linear / nearest)")
    padding = _choice(cx, "padding_mode", "zeros", ("zeros", "border", "reflection"))
    return [cx.emit("grid_sample", x, grid, mode=mode, padding_mode=padding,
                    align_corners=cx.flag("align_corners", 0))]


@converter("AffineGrid", since=20, constant_inputs=(1,))
def _affine_grid(cx):
    size = cx.const_ints(1, "size")
    if len(size) not in (4, 5):
        raise cx.error(UnsupportedError, f"AffineGrid of size {size} (trident builds 2-D and 3-D "
                                         f"grids)")
    return [cx.emit("affine_grid", cx.input(0), size=size,
                    align_corners=cx.flag("align_corners", 0))]


@converter("Col2Im", since=18, constant_inputs=(1, 2))
def _col2im(cx):
    image, block = cx.const_ints(1, "image_shape"), cx.const_ints(2, "block_shape")
    spatial = len(image)
    if len(block) != spatial:
        raise cx.error(ModelError, f"image_shape {image} and block_shape {block} differ in length")
    strides = cx.ints_attr("strides", [1] * spatial)
    dilations = cx.ints_attr("dilations", [1] * spatial)
    pads = cx.ints_attr("pads", [0] * 2 * spatial)
    return [cx.emit("col2im", cx.input(0), image_shape=image, block_shape=block, strides=strides,
                    pads=pads, dilations=dilations)]
