"""ONNX ops over images, sequences and signals, through build_engine and the engine against
onnxruntime: ConvTranspose, Resize, GridSample, AffineGrid, Col2Im, pooling with dilations and
indices, MaxUnpool, Einsum, the integer and QLinear ops, RNN/GRU/LSTM, RotaryEmbedding,
TensorScatter, DFT."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_util import F32, check_engine, make_model, node, run_ort, torch_steps

pytest.importorskip("onnxruntime")

I64 = np.int64


def _floats(shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(F32)


# ------------------------------------------------------------------------ ConvTranspose ----
@pytest.mark.parametrize("attrs", [
    {}, {"strides": [2, 2]}, {"strides": [2, 3], "pads": [1, 0, 0, 2]},
    {"strides": [2, 2], "output_padding": [1, 1]}, {"dilations": [2, 1]},
    {"strides": [3, 2], "output_shape": [10, 8]}, {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, {"group": 2}])
def test_conv_transpose_2d(attrs):
    group = attrs.get("group", 1)
    model = make_model([node("ConvTranspose", ["x", "w", "b"], **attrs)],
                       {"x": (F32, [2, 4, 5, 6])}, ["y"],
                       initializers={"w": _floats([4, 6 // group, 3, 2], 1),
                                     "b": _floats([6], 2)})
    check_engine(model)


def test_conv_transpose_1d_and_3d():
    for shape, kernel in (([1, 2, 7], [3]), ([1, 2, 3, 4, 3], [2, 3, 2])):
        model = make_model([node("ConvTranspose", ["x", "w"], strides=[2] * len(kernel))],
                           {"x": (F32, shape)}, ["y"],
                           initializers={"w": _floats([2, 3] + kernel, 3)})
        check_engine(model)


# ------------------------------------------------------------------------------ Resize ----
RESIZE_CASES = [
    ({"mode": "nearest"}, [1.0, 1.0, 2.0, 3.0], None),
    ({"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "asymmetric"},
     [1.0, 1.0, 0.6, 1.7], None),
    ({"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, None, [1, 3, 7, 4]),
    ({"mode": "linear"}, [1.0, 1.0, 2.0, 1.5], None),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [2, 3, 3, 9]),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, [1, 1, 0.5, 0.8],
     None),
    ({"mode": "linear", "antialias": 1}, [1.0, 1.0, 0.5, 0.6], None),
    ({"mode": "cubic"}, [1.0, 1.0, 1.5, 2.0], None),
    ({"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}, [1.0, 1.0, 0.75, 1.25], None),
    ({"mode": "cubic", "antialias": 1}, [1.0, 1.0, 0.4, 0.5], None),
    ({"mode": "linear", "keep_aspect_ratio_policy": "not_larger", "axes": [2, 3]}, None, [7, 4]),
    ({"mode": "nearest", "coordinate_transformation_mode": "half_pixel_symmetric"},
     [1.0, 1.0, 1.7, 0.6], None),
]


@pytest.mark.parametrize("attrs, scales, sizes", RESIZE_CASES)
def test_resize(attrs, scales, sizes):
    inputs, inits = ["x", "", "scales" if scales else "", "sizes" if sizes else ""], {}
    if scales:
        inits["scales"] = np.array(scales, F32)
    if sizes:
        inits["sizes"] = np.array(sizes, I64)
    model = make_model([node("Resize", [i for i in inputs], **attrs)], {"x": (F32, [2, 3, 4, 5])},
                       ["y"], initializers=inits, opset=19)
    engine = check_engine(model, tol=(1e-4, 1e-5))
    # every resize runs in the pointwise kernels (compiler/passes/resize.py, resample.py) but the
    # antialiased cubic one: 10 x 8 taps per output, more than resample.MAX_TAPS
    heavy = attrs.get("antialias") and attrs["mode"] == "cubic"
    assert torch_steps(engine) == (["resize"] if heavy else [])


def test_resize_tf_crop_and_resize_extrapolates():
    model = make_model([node("Resize", ["x", "roi", "", "sizes"], mode="linear",
                             coordinate_transformation_mode="tf_crop_and_resize",
                             extrapolation_value=10.0)],
                       {"x": (F32, [1, 1, 4, 4])}, ["y"],
                       initializers={"roi": np.array([0, 0, 0.4, 0.6, 1, 1, 1.2, 1.7], F32),
                                     "sizes": np.array([1, 1, 3, 3], I64)})
    check_engine(model)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_resize_nearest_of_integers_is_exact(dtype):
    model = make_model([node("Resize", ["x", "", "scales"], mode="nearest")],
                       {"x": (dtype, [1, 2, 3, 4])}, ["y"],
                       initializers={"scales": np.array([1, 1, 2, 1.5], F32)})
    check_engine(model)


def test_resize_sizes_computed_from_shapes_fold_at_import():
    """Exporters compute sizes as Concat(Shape(x)[:2], constant): folded, no binding needed."""
    model = make_model([node("Shape", ["x"], ["s"]),
                        node("Slice", ["s", "zero", "two"], ["nc"]),
                        node("Concat", ["nc", "hw"], ["sizes"], axis=0),
                        node("Resize", ["x", "", "", "sizes"], mode="nearest")],
                       {"x": (F32, [2, 3, 4, 5])}, ["y"],
                       initializers={"zero": np.array([0], I64), "two": np.array([2], I64),
                                     "hw": np.array([8, 10], I64)})
    check_engine(model)


# ---------------------------------------------------------------------- grids, folding ----
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample(mode, padding_mode, align_corners):
    model = make_model([node("GridSample", ["x", "g"], mode=mode, padding_mode=padding_mode,
                             align_corners=align_corners)],
                       {"x": (F32, [2, 3, 4, 5]), "g": (F32, [2, 6, 7, 2])}, ["y"], opset=20)
    check_engine(model, {"x": _floats([2, 3, 4, 5], 4), "g": _floats([2, 6, 7, 2], 5, -1.2, 1.2)})


@pytest.mark.parametrize("align_corners", [0, 1])
def test_affine_grid(align_corners):
    model = make_model([node("AffineGrid", ["theta", "size"], align_corners=align_corners)],
                       {"theta": (F32, [2, 2, 3])}, ["y"],
                       initializers={"size": np.array([2, 3, 4, 5], I64)}, opset=20)
    check_engine(model)


def test_col2im_matches_torch_fold():
    import torch

    x = _floats([1, 2 * 2 * 3, 10], 6)  # 5 x 2 blocks of 2 x 3 in the padded 6 x 6 image
    model = make_model([node("Col2Im", ["x", "image", "block"], strides=[1, 2], pads=[1, 0, 1, 1],
                             dilations=[1, 1])], {"x": (F32, [1, 12, 10])}, ["y"],
                       initializers={"image": np.array([4, 5], I64), "block": np.array([2, 3], I64)},
                       opset=18)
    full = torch.nn.functional.fold(torch.from_numpy(x), (6, 6), (2, 3), stride=(1, 2)).numpy()
    engine = check_engine(model, {"x": x}, expected=[full[:, :, 1:5, 0:5]])
    assert torch_steps(engine) == []  # a sum of shifted planes (compiler/passes/col2im.py)


@pytest.mark.parametrize("attrs, image, block, blocks", [
    (dict(strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1]), [7, 9], [3, 3], 20),  # VOLO's windows
    (dict(dilations=[2, 1]), [6, 5], [2, 2], 16),  # dilated, overlapping along the other dim
    (dict(strides=[3]), [10], [2], 3),  # 1-D, gaps between the blocks
    (dict(strides=[1, 2, 1]), [3, 4, 3], [2, 2, 2], 8),  # 3-D
])
def test_col2im_of_other_windows_is_kernels(attrs, image, block, blocks):
    channels = 2 * int(np.prod(block))
    model = make_model([node("Col2Im", ["x", "image", "block"], **attrs)], {"x": (F32, [2, channels, blocks])}, ["y"],
                       initializers={"image": np.array(image, I64), "block": np.array(block, I64)}, opset=18)
    assert torch_steps(check_engine(model)) == []


# -------------------------------------------------------------------------------- pools ----
@pytest.mark.parametrize("op", ["AveragePool", "LpPool"])
def test_dilated_pools(op):
    attrs = dict(kernel_shape=[3, 2], dilations=[2, 2], strides=[1, 2], pads=[1, 0, 1, 1])
    if op == "AveragePool":
        attrs["count_include_pad"] = 1
    model = make_model([node(op, ["x"], **attrs)], {"x": (F32, [1, 2, 7, 8])}, ["y"], opset=19)
    check_engine(model)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices_and_unpool(storage_order):
    nodes = [node("MaxPool", ["x"], ["v", "i"], kernel_shape=[2, 2], strides=[2, 2],
                  pads=[0, 1, 0, 1], storage_order=storage_order)]
    if storage_order == 0:
        nodes.append(node("MaxUnpool", ["v", "i"], ["u"], kernel_shape=[2, 2], strides=[2, 2]))
    outputs = ["v", "i"] + (["u"] if storage_order == 0 else [])
    model = make_model(nodes, {"x": (F32, [2, 3, 4, 6])}, outputs)
    check_engine(model)


# ------------------------------------------------------------------- einsum, integers ----
@pytest.mark.parametrize("equation, shapes", [("ij,jk->ik", [[3, 4], [4, 5]]),
                                              ("bhqd,bhkd->bhqk", [[2, 3, 4, 5], [2, 3, 6, 5]]),
                                              ("ii->i", [[4, 4]]), ("...ij->...ji", [[2, 3, 4]]),
                                              ("ij,ij", [[3, 4], [3, 4]]),
                                              ("ibnd,jbnd->bnij", [[5, 2, 3, 4], [6, 2, 3, 4]]),  # XLNet
                                              ("ibh,hnd->ibnd", [[5, 2, 8], [8, 3, 4]]),
                                              ("bnij,jbnd->ibnd", [[2, 3, 5, 6], [6, 2, 3, 4]]),
                                              ("ijk,ik->j", [[3, 4, 5], [3, 5]]), ("i,j->ij", [[3], [4]]),
                                              ("bhqd,bhkd->bhqk", [[2, 1, 5, 8], [2, 3, 7, 8]])])
def test_einsum(equation, shapes):
    names = [f"x{k}" for k in range(len(shapes))]
    model = make_model([node("Einsum", names, equation=equation)],
                       {n: (F32, s) for n, s in zip(names, shapes)}, ["y"])
    engine = check_engine(model)
    # written out as transposes, sums and one matmul (compiler/passes/einsum.py); a diagonal stays
    assert torch_steps(engine) == ([] if equation != "ii->i" else ["einsum"])


def test_integer_matmul_conv_and_qlinear_ops_are_exact():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 255, [3, 4]).astype(np.uint8)
    b = rng.integers(-128, 127, [4, 5]).astype(np.int8)
    model = make_model([node("MatMulInteger", ["a", "b", "az", "bz"])],
                       {"a": (np.uint8, [3, 4]), "b": (np.int8, [4, 5])}, ["y"],
                       initializers={"az": np.array(7, np.uint8), "bz": np.array(-3, np.int8)})
    # (onnxruntime's u8 x s8 kernel saturates pairs of products at int16: numpy is the oracle)
    exact = (a.astype(np.int32) - 7) @ (b.astype(np.int32) + 3)
    check_engine(model, {"a": a, "b": b}, expected=[exact])
    x = rng.integers(0, 255, [1, 2, 5, 5]).astype(np.uint8)
    w = rng.integers(0, 255, [3, 2, 3, 3]).astype(np.uint8)
    model = make_model([node("ConvInteger", ["x", "w", "xz"], pads=[1, 1, 1, 1])],
                       {"x": (np.uint8, [1, 2, 5, 5])}, ["y"],
                       initializers={"w": w, "xz": np.array(100, np.uint8)})
    check_engine(model, {"x": x})
    scale = np.array(0.02, F32)
    model = make_model([node("QLinearMatMul", ["a", "s1", "z1", "b", "s2", "z2", "s3", "z3"])],
                       {"a": (np.uint8, [3, 4])}, ["y"],
                       initializers={"s1": scale, "z1": np.array(9, np.uint8),
                                     "b": rng.integers(0, 255, [4, 5]).astype(np.uint8),
                                     "s2": np.array(0.03, F32), "z2": np.array(120, np.uint8),
                                     "s3": np.array(0.05, F32), "z3": np.array(128, np.uint8)})
    check_engine(model, {"a": a})


def test_dynamic_quantize_linear():
    model = make_model([node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
                       {"x": (F32, [3, 7])}, ["y", "s", "z"])
    check_engine(model, {"x": _floats([3, 7], 8, -2, 5)})


# ----------------------------------------------------------------------- recurrent ----
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_recurrent_layers(op, direction):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    dirs = 2 if direction == "bidirectional" else 1
    hidden, inp, seq, batch = 5, 3, 4, 2
    inits = {"w": _floats([dirs, gates * hidden, inp], 9), "r": _floats([dirs, gates * hidden, hidden], 10),
             "b": _floats([dirs, 2 * gates * hidden], 11),
             "h0": _floats([dirs, batch, hidden], 12)}
    names = ["x", "w", "r", "b", "", "h0"]
    attrs = {"hidden_size": hidden, "direction": direction}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    outputs = ["y", "yh"] + (["yc"] if op == "LSTM" else [])
    model = make_model([node(op, names, outputs, **attrs)], {"x": (F32, [seq, batch, inp])},
                       outputs, initializers=inits)
    check_engine(model)


def test_lstm_batch_first_with_sequence_lengths():
    """layout=1 against the same layer at layout=0 in onnxruntime (which refuses layout=1)."""
    hidden, inp, seq, batch = 4, 3, 5, 3
    inits = {"w": _floats([1, 4 * hidden, inp], 13), "r": _floats([1, 4 * hidden, hidden], 14)}
    x, n = _floats([batch, seq, inp], 15), np.array([5, 2, 3], np.int32)

    def lstm(layout, shape):
        return make_model([node("LSTM", ["x", "w", "r", "", "n"], ["y", "yh", "yc"],
                                hidden_size=hidden, layout=layout)],
                          {"x": (F32, shape), "n": (np.int32, [batch])}, ["y", "yh", "yc"],
                          initializers=inits)

    y, yh, yc = run_ort(lstm(0, [seq, batch, inp]), {"x": x.transpose(1, 0, 2).copy(), "n": n})
    check_engine(lstm(1, [batch, seq, inp]), {"x": x, "n": n},
                 expected=[y.transpose(2, 0, 1, 3), yh.transpose(1, 0, 2), yc.transpose(1, 0, 2)])


# ----------------------------------------------------------------- transformer ops ----
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 4])
def test_rotary_embedding(interleaved, rotary_dim):
    batch, heads, seq, head = 2, 3, 5, 6
    half = (rotary_dim or head) // 2
    angles = np.arange(16)[:, None] * (0.1 + np.arange(half))[None, :]
    model = make_model([node("RotaryEmbedding", ["x", "cos", "sin", "pos"],
                             interleaved=interleaved, rotary_embedding_dim=rotary_dim)],
                       {"x": (F32, [batch, heads, seq, head]), "pos": (I64, [batch, seq])}, ["y"],
                       initializers={"cos": np.cos(angles).astype(F32),
                                     "sin": np.sin(angles).astype(F32)}, opset=23)
    x = _floats([batch, heads, seq, head], 16)
    pos = np.random.default_rng(17).integers(0, 16, [batch, seq]).astype(I64)
    y = x.transpose(0, 2, 1, 3).copy()  # [batch, seq, heads, head]: ONNX's own algorithm
    cos, sin = np.cos(angles)[pos][:, :, None, :], np.sin(angles)[pos][:, :, None, :]
    dim = rotary_dim or head
    rot = y[..., :dim]
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else np.split(rot, 2, -1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    rot = np.stack([real, imag], -1).reshape(rot.shape) if interleaved else \
        np.concatenate([real, imag], -1)
    expected = np.concatenate([rot, y[..., dim:]], -1).transpose(0, 2, 1, 3).astype(F32)
    check_engine(model, {"x": x, "pos": pos}, expected=[expected])


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode):
    model = make_model([node("TensorScatter", ["cache", "update", "at"], mode=mode)],
                       {"cache": (F32, [2, 3, 6, 4]), "update": (F32, [2, 3, 2, 4]),
                        "at": (I64, [2])}, {"y": (F32, [2, 3, 6, 4])}, opset=24)
    cache, update = _floats([2, 3, 6, 4], 18), _floats([2, 3, 2, 4], 19)
    at = np.array([1, 5 if mode == "circular" else 4], I64)
    expected = cache.copy()
    for b in range(2):
        for t in range(2):
            expected[b, :, (at[b] + t) % 6, :] = update[b, :, t, :]
    check_engine(model, {"cache": cache, "update": update, "at": at}, expected=[expected])


@pytest.mark.parametrize("inverse, onesided", [(0, 0), (0, 1), (1, 0)])
@pytest.mark.parametrize("complex_input", [False, True])
@pytest.mark.parametrize("shape, axis", [((2, 8), 1), ((7, 3), 0), ((2, 3, 5), 1)])
def test_dft(shape, axis, complex_input, inverse, onesided):
    """As matrix products in the GEMM kernels (passes/dft.py), real and complex signals, any axis,
    odd lengths; against numpy's FFT."""
    if onesided and complex_input:
        return  # (ONNX leaves a complex signal's one-sided transform undefined)
    x_shape = list(shape) + [2 if complex_input else 1]
    bins = shape[axis] // 2 + 1 if onesided else shape[axis]
    y_shape = [bins if d == axis else n for d, n in enumerate(shape)] + [2]
    model = make_model([node("DFT", ["x", "", "axis"], inverse=inverse, onesided=onesided)],
                       {"x": (F32, x_shape)}, {"y": (F32, y_shape)},
                       initializers={"axis": np.array(axis, I64)}, opset=20)
    x = _floats(x_shape, 20)
    signal = x[..., 0] + (1j * x[..., 1] if complex_input else 0)
    z = np.fft.ifft(signal, axis=axis) if inverse else np.fft.fft(signal, axis=axis)
    z = np.take(z, range(bins), axis=axis)
    engine = check_engine(model, {"x": x}, expected=[np.stack([z.real, z.imag], -1).astype(F32)])
    assert torch_steps(engine) == []


def test_an_inverse_one_sided_dft_runs_in_torch():
    """A real signal from half a spectrum (irfft): not lowered, torch's step."""
    model = make_model([node("DFT", ["x", "", "axis"], inverse=1, onesided=1)], {"x": (F32, [2, 5, 2])},
                       {"y": (F32, [2, 8, 1])}, initializers={"axis": np.array(1, I64), }, opset=20)
    x = _floats([2, 5, 2], 21)
    z = np.fft.irfft(x[..., 0] + 1j * x[..., 1], n=8, axis=1)
    engine = check_engine(model, {"x": x}, expected=[z[..., None].astype(F32)])
    assert torch_steps(engine) == ["dft"]


def test_col2im_of_the_wrong_number_of_blocks_is_a_shape_error():
    from trident.compiler import build_engine
    from trident.compiler.errors import ShapeError

    model = make_model([node("Col2Im", ["x", "image", "block"], strides=[3])], {"x": (F32, [2, 4, 5])}, ["y"],
                       initializers={"image": np.array([10], I64), "block": np.array([2], I64)}, opset=18)
    with pytest.raises(ShapeError, match=r"Col2Im.*expected \[N, C \* 2, 3\]"):
        build_engine(model, "fp32")
