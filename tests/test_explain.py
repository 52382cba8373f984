"""explain(): per-layer scales, int32 bias and requantize multipliers of a small quantized model."""

import json

import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
import torch.nn as nn

from qcompile.errors import QCompileError
from qcompile.explain_layers import explain, format_explain

PER_TENSOR = tq.QConfig(
    activation=tq.MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
    weight=tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv, self.relu = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.dw(self.relu(self.conv(self.quant(x))))
        return self.dequant(self.fc(torch.flatten(x, 1)))


@pytest.fixture(scope="module")
def quantized():
    torch.manual_seed(0)
    model = Small().eval()
    tq.fuse_modules(model, [["conv", "relu"]], inplace=True)
    model.qconfig = tq.get_default_qconfig("fbgemm")
    model.fc.qconfig = PER_TENSOR  # one per-tensor layer as well
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            for _ in range(4):
                model(torch.randn(1, 3, 8, 8))
        tq.convert(model, inplace=True)
        yield model, [torch.randn(1, 3, 8, 8)]
    finally:
        torch.backends.quantized.engine = previous


def test_rows_and_scales(quantized):
    model, inputs = quantized
    report = explain(model, inputs)
    rows = report["layers"]
    assert [r["name"] for r in rows] == ["conv", "dw", "fc"]
    assert [r["kind"] for r in rows] == ["conv2d+relu", "conv2d", "linear"]
    assert rows[1]["groups"] == 8 and rows[1]["stride"] == [2, 2]
    assert rows[0]["weight"]["qscheme"] == "per_channel"
    assert rows[2]["weight"]["qscheme"] == "per_tensor"
    # each layer's input is the previous layer's output; the first gets the QuantStub's qparams
    assert rows[0]["input"]["scale"] == pytest.approx(float(model.quant.scale))
    assert rows[0]["input"]["zero_point"] == int(model.quant.zero_point)
    for prev, row in zip(rows, rows[1:]):
        assert row["input"] == prev["output"]
    for row in rows:
        m = dict(model.named_modules())[row["name"]]
        assert row["output"] == {"scale": float(m.scale), "zero_point": int(m.zero_point)}
        w = m.weight()
        if row["weight"]["qscheme"] == "per_channel":
            scales = w.q_per_channel_scales().double().numpy()
        else:
            scales = np.array([w.q_scale()])
        assert row["weight"]["scale_min"] == scales.min()
        assert row["weight"]["scale_max"] == scales.max()


def test_int32_bias_and_error_bound(quantized):
    model, inputs = quantized
    rows = explain(model, inputs)["layers"]
    # independent recomputation for the depthwise layer, integer contract
    dw, row = model.dw, rows[1]
    sw = dw.weight().q_per_channel_scales().double().numpy()
    s_in = row["input"]["scale"]
    bq = np.rint(dw.bias().detach().double().numpy() / (s_in * sw))
    assert row["bias"]["integer"]["int32_min"] == int(bq.min())
    assert row["bias"]["integer"]["int32_max"] == int(bq.max())
    for row in rows:
        m = dict(model.named_modules())[row["name"]]
        w = m.weight()
        sw = (w.q_per_channel_scales().double().numpy()
              if row["weight"]["qscheme"] == "per_channel" else np.array([w.q_scale()]))
        bound = 0.5 * row["input"]["scale"] * sw.max() / row["output"]["scale"]
        for contract in ("qnnpack", "integer"):
            assert 0 <= row["bias"][contract]["max_err_lsb"] <= bound * (1 + 1e-6) + 1e-9
        rq = row["requantize"]
        assert rq["float32_min"] <= rq["float32_max"]
        approx = rq["m0"] / 2.0 ** rq["shift"]
        real = row["input"]["scale"] * sw[0] / row["output"]["scale"]
        assert approx == pytest.approx(real, rel=1e-6)


def test_layer_filter_and_unknown_layer(quantized):
    model, inputs = quantized
    rows = explain(model, inputs, layer="dw")["layers"]
    assert [r["name"] for r in rows] == ["dw"]
    with pytest.raises(QCompileError) as err:
        explain(model, inputs, layer="nope")
    assert all(name in str(err.value) for name in ("conv", "dw", "fc"))


def test_json_and_format(quantized):
    model, inputs = quantized
    report = explain(model, inputs)
    assert json.loads(json.dumps(report)) == report
    text = format_explain(report)
    for name in ("conv", "dw", "fc", "fbgemm", "qnnpack", "integer"):
        assert name in text


class _PT2ESmall(nn.Module):
    """A 3x3 conv, a depthwise conv, a 1x1 conv with a residual add, a float linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = torch.relu(self.pw(torch.relu(self.dw(y))) + y)
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def pt2e_graph():
    from qcompile.zoo.pt2e_quantize import quantize_pt2e

    torch.manual_seed(0)
    return quantize_pt2e(_PT2ESmall().eval(), [torch.randn(1, 3, 8, 8) for _ in range(4)], "x86")


def test_pt2e_graph_layers_and_the_inductor_scale_order(pt2e_graph):
    """A PT2E graph is read from its Q/DQ nodes: every conv/linear, its qparams, whether its
    output is quantized or float, and how the inductor contract scales its accumulator on a CPU
    with AMX (combined for the 3x3 conv and the linear) and without (always sequential)."""
    amx = explain(pt2e_graph, [torch.randn(1, 3, 8, 8)], target="x86-amx")
    vnni = explain(pt2e_graph, [torch.randn(1, 3, 8, 8)], target="x86-avx512-vnni")
    kinds = [r["accumulator"] for r in amx["layers"]]
    assert kinds == ["conv", "depthwise", "conv1x1", "linear"], kinds
    order = {r["accumulator"]: r["scales_by_contract"]["inductor"].split(":")[0]
             for r in amx["layers"]}
    assert order == {"conv": "combined", "depthwise": "sequential", "conv1x1": "sequential",
                     "linear": "combined"}, order
    assert {r["scales_by_contract"]["inductor"].split(":")[0] for r in vnni["layers"]} == {
        "sequential"}
    assert all(r["scales_by_contract"]["pt2e"].startswith("exact") for r in amx["layers"])
    assert amx["layers"][-1]["output"].get("float") and amx["layers"][0]["output"]["scale"] > 0
    assert json.loads(json.dumps(amx)) == amx
    text = format_explain(amx)
    assert "inductor scales (AMX)" in text and "pt2e" in text and "depthwise g8" in text
    with pytest.raises(QCompileError) as err:
        explain(pt2e_graph, [torch.randn(1, 3, 8, 8)], layer="nope")
    assert "conv2d" in str(err.value) and "linear" in str(err.value)
