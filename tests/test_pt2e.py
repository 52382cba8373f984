"""PT2E models (torchao prepare_pt2e / convert_pt2e, torch.export): imported into the Q/DQ form
and compiled under the pt2e contract, checked against the PT2E program as PyTorch runs it."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
import torch.nn as nn

import qcompile
from qcompile.cli import main
from qcompile.zoo import pt2e_quantize as zoo_pt2e

from helpers import inputs_like, seeded

pytest.importorskip("torchao")


def _quantize(model, shape, quantizer, n=4, seed=0):
    calib = inputs_like(shape, n=n, seed=seed)
    return zoo_pt2e.quantize_pt2e(seeded(model).eval(), calib, quantizer), calib


def _verify(gm, inputs, **kw):
    """Compile under the pt2e contract (these tests are about what imports and how close the
    eager program is; tests/test_onednn_arithmetic.py holds the inductor contract's) and verify
    layer by layer against the eager program."""
    kw.setdefault("numerics", "pt2e")
    compiled = qcompile.compile(gm, inputs[:1], tune_logs=False, probe=True, **kw)
    return compiled, qcompile.verify(gm, compiled, inputs, per_layer=True)


def test_torchao_brings_no_torch_of_its_own():
    """The pt2e extra must not pull a (CUDA) torch over the pinned CPU wheel."""
    requires = importlib.metadata.requires("torchao") or []
    assert not [r for r in requires if r.startswith("torch") and "extra ==" not in r], requires


@pytest.mark.parametrize("quantizer", ["xnnpack", "x86"])
@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_zoo_cnn(name, quantizer):
    """XNNPACKQuantizer quantizes the logits: bit-exact on the model's own inputs.
    X86InductorQuantizer leaves them float (a float linear summed in oneDNN's order).  Any
    difference must start as a single step in one quantized tensor (PyTorch's float conv sum
    rounding across a step); it may then spread through later layers.  MobileNetV3's
    squeeze-excite gate is a broadcasting mul (it once read out of bounds: 150-step errors),
    and XNNPACKQuantizer leaves its hardswish as a float island."""
    zm = zoo_pt2e.get(name, quantizer, image_size=32)
    gen = torch.Generator().manual_seed(7)
    off_distribution = [torch.randn(zm.input_shape, generator=gen) for _ in range(2)]
    compiled = qcompile.compile(zm.quantized, zm.example_inputs(1), numerics="pt2e",
                                tune_logs=False, probe=True)
    assert compiled.meta["numerics"] == "pt2e"
    quantize_nodes = [n for n in zm.quantized.graph.nodes if n.op == "call_function" and str(
        n.target).startswith("quantized_decomposed.quantize_per_tensor")]
    for inputs in (zm.example_inputs(4), off_distribution):
        report = qcompile.verify(zm.quantized, compiled, inputs, per_layer=True)
        assert report["engine"] == "pt2e" and report["top1_agreement"] == 1.0, report
        assert report["layers_compared"] >= len(quantize_nodes) - 5  # a few requantize no-ops
        first = report["first_divergent_layer"]
        assert first is None or (first["mismatch_fraction"] < 1e-2
                                 and first["max_abs_steps"] == 1), report
        if quantizer == "x86":
            assert report["unit"] == "float32 ulp" and report["cosine"] > 0.99999, report
    report = qcompile.verify(zm.quantized, compiled, zm.example_inputs(4))
    if quantizer == "xnnpack":
        assert report["unit"] == "lsb" and report["bit_exact_fraction"] >= 0.999, report
        assert report["max_abs_lsb"] <= 2, report


class _ResidualBlock(nn.Module):
    """conv -> relu, conv (+ input) -> relu, maxpool, cat, hardswish, pool, linear."""

    def __init__(self, full: bool = True):
        super().__init__()
        self.full = full
        self.c1 = nn.Conv2d(5, 12, 3, padding=1)
        self.c2 = nn.Conv2d(12, 5, 1)
        self.c3 = nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=False)
        self.c4 = nn.Conv2d(12, 6, 1)
        self.fc = nn.Linear(6 if full else 7, 3)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c2(y) + x)
        z = self.c3(y)
        if self.full:  # the x86 quantizer leaves max pool and cat float: float islands
            z = self.c4(torch.cat([z, nn.functional.max_pool2d(y, 2)], dim=1))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 1), 1))


def test_the_conv_scale_product_stays_double():
    """numerics.requantize.conv_value computes a conv's value as f(double(acc) * (double(sx) *
    double(sw))); the per-channel products reach the kernel as a float64 array (relax.const
    makes a float64 array float32 unless told, and the conv values then moved by a float32
    rounding of sx * sw: MobileNetV2 xnnpack 0.9940 / 4 LSB against eager instead of 0.9958 /
    2)."""
    import tvm

    gm, calib = _quantize(_ResidualBlock(full=True), (1, 5, 12, 12), "x86")
    compiled = qcompile.compile(gm, calib[:1], numerics="pt2e", tune_logs=False)
    kernels = [f for _, f in compiled.integer_module.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and "epilogue_pt2e" in f.script()]
    assert kernels
    for func in kernels:
        assert "float64" in [str(p.ty.dtype) for p in func.params], func.script()


@pytest.mark.parametrize("quantizer", ["x86", "xnnpack"])
def test_small_graph_every_quantized_tensor_is_exact(quantizer):
    """Residual conv+add+relu (fused into the conv by the x86 quantizer), int8 activations
    (xnnpack), max pool, cat, global pooling, a float or quantized linear output; under x86 the
    max pool and cat stay float (islands), and every quantized tensor is still exact."""
    gm, _ = _quantize(_ResidualBlock(full=True), (1, 5, 12, 12), quantizer)
    inputs = inputs_like((1, 5, 12, 12), n=3, seed=5) + inputs_like((1, 5, 12, 12), n=2,
                                                                     scale=4.0, seed=6)
    _, report = _verify(gm, inputs)
    assert report["layers_compared"] >= 5
    assert report["differing_layers"] == {}, report
    assert report["max_abs_error"] < 1e-4, report


def test_exported_program_file_through_the_command_line(tmp_path, capsys):
    gm, calib = _quantize(_ResidualBlock(full=False), (1, 5, 12, 12), "x86")
    path = tmp_path / "block.pt2"
    torch.export.save(torch.export.export(gm, (calib[0],)), str(path))
    assert main(["verify", str(path), "--input-shape", "1,5,12,12", "--inputs", "2",
                 "--no-tune-logs"]) == 0
    out = capsys.readouterr().out
    # (not bit for bit: Inductor leaves this 7 -> 3 linear to its generated C++, float products
    # summed in its vector order; docs/numerics.md)
    assert "numerics inductor vs PyTorch torch.compile" in out and "float output" in out
    assert "cosine 1.000000000" in out, out
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(path.read_bytes()[:2000])
    assert main(["compile", str(bad), "--input-shape", "1,5,12,12", "-o",
                 str(tmp_path / "x.so")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_contract_mismatches_are_refused():
    gm, calib = _quantize(_ResidualBlock(full=False), (1, 5, 12, 12), "x86", n=1)
    with pytest.raises(qcompile.QCompileError, match="compile it with numerics='pt2e'"):
        qcompile.compile(gm, calib, numerics="fbgemm", tune_logs=False)
    from qcompile import zoo

    eager = zoo.get("mobilenet_v2", image_size=32)
    with pytest.raises(qcompile.QCompileError, match="arithmetic of PT2E models"):
        qcompile.compile(eager.quantized, eager.example_inputs(1), numerics="pt2e")


class _Flip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.flip(self.conv(x), [1])


def test_unsupported_op_names_op_and_node():
    gm, calib = _quantize(_Flip(), (1, 3, 8, 8), "x86", n=1)
    with pytest.raises(qcompile.QCompileError,
                       match=r"unsupported PT2E op aten\.flip.*node 'flip'"):
        qcompile.compile(gm, calib, tune_logs=False)


class _FloatIslands(nn.Module):
    """Quantized convs and linears with the float ops a quantizer leaves between them, as
    exported CNNs and transformers have them: SiLU, GELU, LayerNorm over channels (ConvNeXt's
    permutes), attention on tokens (class token expanded and concatenated, SDPA on
    unflattened heads, select / unbind / squeeze), scalar arithmetic, interpolation, a mean
    over tokens, and a linear the quantizer left in float (MultiheadAttention's in_proj)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.in_proj_weight = nn.Parameter(torch.randn(16, 16) / 4)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y = nn.functional.silu(self.stem(x))                         # (1, 16, 8, 8)
        y = self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = nn.functional.gelu(self.pw(y)) * 0.5 - 0.1
        y = y + nn.functional.interpolate(nn.functional.avg_pool2d(y, 2), scale_factor=2.0)
        y = y + nn.functional.interpolate(nn.functional.avg_pool2d(y, 2), scale_factor=2.0,
                                          mode="bilinear", align_corners=False)
        tokens = torch.cat([self.cls.expand(1, -1, -1), y.flatten(2).transpose(1, 2)], dim=1)
        q, k, v = self.qkv(tokens).unflatten(-1, (3, 2, 8)).permute(2, 0, 3, 1, 4).unbind(0)
        attn = nn.functional.scaled_dot_product_attention(q, k, v)     # (1, 2, 65, 8)
        tokens = tokens + self.proj(attn.transpose(1, 2).flatten(2))
        tokens = nn.functional.linear(tokens, self.in_proj_weight) / 2.0
        pooled = tokens[:, 1:].mean(dim=1) + tokens.select(1, 0).unsqueeze(1).squeeze(1)
        return self.head(torch.sigmoid(pooled))


def test_float_islands_between_quantized_ops():
    """Every op above imports and runs; top-1 and cosine against the PT2E program as PyTorch
    runs it (the float islands are TVM's float kernels, not PyTorch's bit for bit)."""
    gm, calib = _quantize(_FloatIslands(), (1, 3, 16, 16), "x86", n=4)
    ops = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert ops >= {f"aten.{op}" for op in (
        "silu.default", "gelu.default", "layer_norm.default", "permute.default", "sub.Tensor",
        "div.Tensor", "mul.Tensor", "upsample_nearest2d.vec", "upsample_bilinear2d.vec",
        "expand.default", "unflatten.int", "unbind.int", "scaled_dot_product_attention.default",
        "slice.Tensor", "select.int", "squeeze.dim", "unsqueeze.default", "mean.dim",
        "sigmoid.default")}, ops
    compiled, report = _verify(gm, calib)
    assert report["top1_agreement"] == 1.0 and report["cosine"] > 0.9999, report


def test_long_squeeze_excite_pools_compile_and_agree():
    """MobileNetV3-small at 224 px: squeeze-excite pools over 56x56 and 28x28 maps (PyTorch's
    cascaded sum, numerics.pooling) used to be refused."""
    zm = zoo_pt2e.get("mobilenet_v3_small", "x86", image_size=224)
    compiled = qcompile.compile(zm.quantized, zm.example_inputs(1), numerics="pt2e",
                                tune_logs=False)
    inputs = zm.example_inputs(2)
    report = qcompile.verify(zm.quantized, compiled, inputs)
    assert report["cosine"] > 0.9999, report
    # top-1 where the reference's own top two logits are further apart than the largest
    # difference: random weights leave near-ties, and the eager program's float convs sum in
    # oneDNN's order, which differs between CPUs (AMX or not)
    with torch.no_grad():
        for x in inputs:
            ref, got = zm.quantized(x).numpy()[0], compiled(x)[0]
            top2 = np.sort(ref)[-2:]
            if top2[1] - top2[0] > 2 * np.abs(ref - got).max():
                assert ref.argmax() == got.argmax(), report


class _DepthwiseBlock(nn.Module):
    """1x1 expand -> relu6, 3x3 depthwise (stride 2) -> relu6, 1x1 project: MobileNetV2's
    (one relu6 a module, exported as hardtanh; one functional, exported as aten.relu6)."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(4, 16, 1)
        self.relu6 = nn.ReLU6()
        self.dw = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.project = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.relu6(self.expand(x))
        return self.project(nn.functional.relu6(self.dw(y)))


@pytest.mark.parametrize("quantizer", ["x86", "xnnpack"])
def test_depthwise_and_relu6_become_fused_window_kernels(quantizer):
    """A PT2E depthwise conv is the exact window kernel, and a relu6 whose 256-step table is a
    clamp (same input and output qparams) is fused into the conv before it as that clamp;
    every quantized tensor stays as PyTorch computes it.  XNNPACKQuantizer gives the
    functional relu6 qparams of its own: that one stays a lookup (a rescaling table)."""
    gm, _ = _quantize(_DepthwiseBlock(), (1, 4, 10, 10), quantizer)
    inputs = inputs_like((1, 4, 10, 10), n=3, seed=3)
    _, report = _verify(gm, inputs)
    assert report["differing_layers"] == {}, report
    compiled = qcompile.compile(gm, inputs[:1], tune_logs=False)  # no probes: fused as shipped
    kernels = compiled.meta["kernels"]
    assert kernels["window"] == 1 and kernels["tensorized"] == 2, kernels
    # generic: the input quantize (+ xnnpack's rescaling relu6 table); no clamp of its own
    assert kernels["generic"] == (2 if quantizer == "xnnpack" else 1), kernels
    functions = compiled.executable.stats()
    assert ("fused_conv2d_packed_subtract_requantize_qclip" in functions) == (
        quantizer == "xnnpack"), functions


def test_a_table_is_a_clamp_only_when_every_step_agrees():
    from qcompile.numerics.tables import decomposed_tables
    from qcompile.passes.lower_qdq_ops import _table_as_clamp

    def unary_table(*args):
        return decomposed_tables(*args)[0]

    q = (0.05, 10)
    assert _table_as_clamp(unary_table("clip", q, q, (0.0, 6.0))) == (10, 130)
    assert _table_as_clamp(unary_table("relu", q, q)) == (10, 255)
    assert _table_as_clamp(unary_table("clip", q, (0.1, 10), (0.0, 6.0))) is None  # rescales
    assert _table_as_clamp(unary_table("hardswish", q, q)) is None


def test_pt2e_path_needs_no_quantized_tensors(monkeypatch):
    """PyTorch deprecated its quantized dtypes and torch.quantize_per_tensor: compile and
    verify (per layer) of a PT2E model must not touch them.  (`explain` reads eager modules
    only; it does not take PT2E models yet.)"""
    gm, calib = _quantize(_DepthwiseBlock(), (1, 4, 12, 12), "x86", n=2)

    def gone(*args, **kwargs):
        raise AssertionError("a deprecated quantized-tensor API was used on the PT2E path")

    for name in ("quantize_per_tensor", "quantize_per_channel", "_empty_affine_quantized",
                 "_empty_per_channel_affine_quantized"):
        monkeypatch.setattr(torch, name, gone)
    for name in ("int_repr", "q_scale", "q_zero_point", "q_per_channel_scales",
                 "q_per_channel_zero_points"):
        monkeypatch.setattr(torch.Tensor, name, gone)
    for name in ("quint8", "qint8", "qint32"):
        monkeypatch.delattr(torch, name)
    compiled, report = _verify(gm, calib)
    assert report["engine"] == "pt2e" and report["layers_compared"] > 0, report
    # the inductor contract (the default for these uint8 models) builds without them too
    compiled = qcompile.compile(gm, calib[:1], tune_logs=False)
    assert compiled.meta["numerics"] == "inductor"
    report = qcompile.verify(gm, compiled, calib, engine="pt2e")
    assert report["cosine"] > 0.9999, report
    # and explain reads the graph's Q/DQ nodes, not quantized tensors
    from qcompile.explain_layers import explain

    assert explain(gm, calib[:1])["layers"]
