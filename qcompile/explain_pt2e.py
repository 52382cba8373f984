"""`explain` for PT2E graphs (torchao convert_pt2e): each conv/linear between Q/DQ nodes.

A PT2E graph holds no quantized modules: a conv is `aten.conv2d(dequantize(x), dequantize(W),
bias)` and its output qparams sit on the quantize after it (through relu / hardtanh / hardswish
/ SiLU / a residual add).  For each such layer the report gives its shape, qparams, bias range
and how each PT2E contract scales its accumulator; under `inductor` that depends on the
accumulator kind and on whether the target CPU has AMX (numerics.onednn).  Reads the graph's
constants only; no quantized tensor is touched.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

from .errors import QCompileError
from .numerics import onednn
from .numerics.requantize import Scales
from .numerics.contracts import PT2E, contracts_for

_QD = torch.ops.quantized_decomposed
_DQ_TENSOR = (_QD.dequantize_per_tensor.default, _QD.dequantize_per_tensor.tensor)
_Q_TENSOR = (_QD.quantize_per_tensor.default, _QD.quantize_per_tensor.tensor)
_PASS_THROUGH = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default,
                 torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default,
                 torch.ops.aten.hardswish.default, torch.ops.aten.hardswish_.default,
                 torch.ops.aten.silu.default, torch.ops.aten.silu_.default,
                 torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor}


def _value(gm, arg):
    """A node's constant (get_attr) or a literal, as numpy."""
    if isinstance(arg, torch.fx.Node):
        if arg.op != "get_attr":
            return None
        target = operator.attrgetter(arg.target)(gm)
        return target.detach().numpy() if isinstance(target, torch.Tensor) else target
    return np.asarray(arg)


def _output_qparams(node):
    """(scale, zero point) of the quantize the layer's value reaches, or None (a float output)."""
    for _ in range(4):
        users = list(node.users)
        quantize = [u for u in users if u.target in _Q_TENSOR]
        if quantize:
            return float(quantize[0].args[1]), int(quantize[0].args[2])
        passing = [u for u in users if u.target in _PASS_THROUGH]
        if len(passing) != 1:
            return None
        node = passing[0]
    return None


def _groups(node) -> int:
    """A conv2d node's groups (1 for a linear)."""
    conv = node.target != torch.ops.aten.linear.default
    return int(node.args[6]) if conv and len(node.args) > 6 else 1


def _kind(node, weight: np.ndarray) -> str:
    if node.target == torch.ops.aten.linear.default:
        return onednn.LINEAR
    groups = _groups(node)
    if groups > 1 and weight.shape[1] == 1:
        return onednn.DEPTHWISE
    return onednn.CONV_1X1 if tuple(weight.shape[2:]) == (1, 1) else onednn.CONV


def _order(scales: Scales) -> str:
    """How an epilogue's constants scale the accumulator, in words."""
    if scales.first is not None:
        return "sequential: f(f(acc*sx)*sw)"
    if scales.channel.dtype == np.float64:
        return "exact: f(double(acc)*(double(sx)*double(sw)))"
    return "combined: f(acc*f(sx*sw))"


def _layer(gm, node, amx: bool) -> dict | None:
    x, w = node.args[0], node.args[1]
    if not (isinstance(x, torch.fx.Node) and x.target in _DQ_TENSOR
            and isinstance(w, torch.fx.Node) and str(w.target).startswith(
                "quantized_decomposed.dequantize_per")):
        return None  # a float conv/linear (a float island)
    weight = _value(gm, w.args[0])
    if weight is None:
        return None
    sw = np.atleast_1d(_value(gm, w.args[1])).astype(np.float64)
    zw = np.atleast_1d(_value(gm, w.args[2]))
    sx, zx = float(x.args[1]), int(x.args[2])
    out = _output_qparams(node)
    kind = _kind(node, weight)
    bias = _value(gm, node.args[2]) if len(node.args) > 2 and node.args[2] is not None else None
    conv = node.target != torch.ops.aten.linear.default
    row = {
        "name": node.name, "kind": "conv2d" if conv else "linear", "accumulator": kind,
        "in_channels": int(weight.shape[1]) * _groups(node),
        "out_channels": int(weight.shape[0]),
        "kernel": list(weight.shape[2:]) if conv else None, "groups": _groups(node),
        "input": {"scale": sx, "zero_point": zx},
        "weight": {"qscheme": "per_channel" if sw.size > 1 else "per_tensor",
                   "scale_min": float(sw.min()), "scale_max": float(sw.max()),
                   "zero_points": sorted({int(z) for z in zw})},
        "output": ({"scale": out[0], "zero_point": out[1]} if out is not None
                   else {"scale": None, "zero_point": None, "float": True}),
        "bias": None if bias is None else {"min": float(bias.min()), "max": float(bias.max()),
                                           "absmax": float(np.abs(bias).max())},
        "requantize": None,
        "scales_by_contract": {},
    }
    for contract in contracts_for(PT2E):
        row["scales_by_contract"][contract.name] = _order(
            contract.epilogue.scales(sx, sw, kind, amx))
    if out is not None:
        ratio = np.float64(sx) * sw / out[0]
        row["multiplier"] = {"min": float(ratio.min()), "max": float(ratio.max())}
    return row


def explain_pt2e(model, layer: str | None = None, amx: bool = False) -> dict:
    """Per quantized conv/linear node of a PT2E graph (or only `layer`, a node name); `amx`:
    the target CPU family has AMX (the inductor contract's scales depend on it)."""
    gm = model.graph_module if isinstance(model, torch.export.ExportedProgram) else model
    rows = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in (torch.ops.aten.conv2d.default,
                                                          torch.ops.aten.linear.default):
            row = _layer(gm, node, amx)
            if row is not None:
                rows.append(row)
    if not rows:
        raise QCompileError("no quantized conv2d/linear in this PT2E graph (each must read a "
                            "dequantize of its input and of its weight)")
    if layer is not None:
        names = [r["name"] for r in rows]
        if layer not in names:
            raise QCompileError(f"unknown layer {layer!r}; quantized conv/linear nodes: "
                                + ", ".join(names))
        rows = [r for r in rows if r["name"] == layer]
    return {"layers": rows, "amx": amx,
            "contracts": {c.name: c.explain for c in contracts_for(PT2E)}}


def format_explain_pt2e(report: dict) -> str:
    """The PT2E report as a fixed-width table, then one legend line per contract."""
    def g(v, fmt="{:.3g}"):
        return "-" if v is None else fmt.format(v)

    head = ("layer", "kind", "in scale", "in zp", "w scale", "out", "sx*sw/so",
            f"inductor scales ({'AMX' if report['amx'] else 'no AMX'})")
    rows = []
    for r in report["layers"]:
        w, out, m = r["weight"], r["output"], r.get("multiplier")
        rows.append((r["name"], r["accumulator"] + (f" g{r['groups']}" if r["groups"] > 1
                                                    else ""),
                     g(r["input"]["scale"]), str(r["input"]["zero_point"]),
                     f"{g(w['scale_min'])}..{g(w['scale_max'])}",
                     "float" if out.get("float") else f"{g(out['scale'])} zp {out['zero_point']}",
                     "-" if m is None else f"{g(m['min'])}..{g(m['max'])}",
                     r["scales_by_contract"].get("inductor", "-").split(":")[0]))
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(row, widths)).rstrip() for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    lines.append("")
    lines += [f"{name:9s} {what}" for name, what in report["contracts"].items()]
    return "\n".join(lines)
