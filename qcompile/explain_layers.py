"""`explain`: what each numerics contract does with every quantized conv/linear of a model.

For each torch.ao.nn.quantized Conv2d / Linear (and the intrinsic ConvReLU2d / LinearReLU) the
report gives its shape, the qparams of its input, weight and output, the float bias and its int32
form under every contract that rounds it, and the requantize multipliers.  Every number comes
from the contracts' own rules (numerics.contracts), i.e. the constants the compiled kernels
use.  The report is plain JSON (floats, ints, lists, dicts).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd

from .errors import QCompileError
from .numerics.contracts import EAGER, contracts_for


def _layers(model) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every static quantized Conv2d / Linear, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (nnq.Conv2d, nnq.Linear)) and not isinstance(m, nnqd.Linear)]


def _input_qparams(model, layers, example_inputs) -> dict[str, tuple[float, int]]:
    """Run the model once; record (scale, zero point) of the first input each layer receives."""
    seen: dict[str, tuple[float, int]] = {}

    def hook_for(name):
        def hook(module, args):
            if name not in seen:
                seen[name] = (float(args[0].q_scale()), int(args[0].q_zero_point()))
        return hook

    x = example_inputs[0] if isinstance(example_inputs, (list, tuple)) else example_inputs
    hooks = [m.register_forward_pre_hook(hook_for(name)) for name, m in layers]
    try:
        with torch.no_grad():
            model(*x) if isinstance(x, (list, tuple)) else model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _stats(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.min()), float(v.max())


def _shape(m) -> dict:
    if isinstance(m, nnq.Conv2d):
        return {"in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel": list(m.kernel_size), "stride": list(m.stride),
                "padding": list(m.padding), "groups": m.groups}
    return {"in_channels": m.in_features, "out_channels": m.out_features,
            "kernel": None, "stride": None, "padding": None, "groups": 1}


def _weight(w: torch.Tensor) -> tuple[dict, np.ndarray]:
    """Weight qparams summary and the per-channel (or single) scale array."""
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales = w.q_per_channel_scales().double().numpy()
        zps = w.q_per_channel_zero_points().numpy()
        scheme = "per_channel"
    else:
        scales, zps, scheme = np.array([w.q_scale()]), np.array([w.q_zero_point()]), "per_tensor"
    lo, hi = _stats(scales)
    summary = {"qscheme": scheme, "scale_min": lo, "scale_max": hi,
               "zero_points": sorted({int(z) for z in zps})}
    return summary, scales


def _explain_layer(name, m, in_qparams) -> dict:
    kind = "conv2d" if isinstance(m, nnq.Conv2d) else "linear"
    relu = type(m).__name__.endswith("ReLU2d") or type(m).__name__.endswith("ReLU")
    weight, sw = _weight(m.weight())
    s_out, z_out = float(m.scale), int(m.zero_point)
    row = {"name": name, "kind": kind + ("+relu" if relu else ""), "module": type(m).__name__,
           **_shape(m), "weight": weight, "output": {"scale": s_out, "zero_point": z_out},
           "input": None, "bias": None, "requantize": None}
    if in_qparams is None:  # the layer did not run on the example input
        return row
    s_in, z_in = in_qparams
    row["input"] = {"scale": s_in, "zero_point": z_in}

    # the multiplier as float and as Q31 m0 / 2^shift: the first contract of each kind
    row["requantize"], row["requantize_by_contract"] = {}, {}
    for contract in contracts_for(EAGER):
        described = contract.requantize(s_in, sw, s_out, z_out, None).describe()
        row["requantize_by_contract"][contract.name] = described
        for key, value in described.items():
            row["requantize"].setdefault(key, value)

    b = m.bias()
    if b is None:
        return row
    bias = b.detach().float().numpy()
    real_step = np.float64(s_in) * sw  # the accumulator's step in real units, per channel
    row["bias"] = {"min": float(bias.min()), "max": float(bias.max()),
                   "absmax": float(np.abs(bias).max())}
    for contract in contracts_for(EAGER):
        row["bias"][contract.name] = entry = {"what": contract.explain}
        if contract.int32_bias is None:
            continue
        bq = contract.int32_bias(bias, s_in, sw).astype(np.int64)
        err = np.abs(bq * real_step - bias.astype(np.float64)) / s_out
        entry.update({"int32_min": int(bq.min()), "int32_max": int(bq.max()),
                      "max_err_lsb": float(err.max())})
    return row


def explain(model, example_inputs, layer: str | None = None, target: str = "x86") -> dict:
    """Per quantized conv/linear of `model` (in module order, or only `layer`): shapes, qparams,
    bias in int32 under each contract with its rounding error in output LSBs, and requantize
    multipliers.  `example_inputs`: a tensor or a list of them (the first is run once to learn
    each layer's input qparams).  Returns a JSON-serialisable dict {"layers": [...], "contracts"}.
    A PT2E graph is read from its Q/DQ nodes instead (explain_pt2e), for `target`'s CPU family.
    """
    from .frontend.pt2e_import import is_pt2e_graph

    if is_pt2e_graph(model):
        from qcompile.schedules import resolve_family

        from .explain_pt2e import explain_pt2e

        return explain_pt2e(model, layer, amx=resolve_family(target).amx)
    if isinstance(model, torch.jit.ScriptModule):
        raise QCompileError("explain reads the quantized modules of an nn.Module (eager or fx); "
                            "a TorchScript model hides them: explain the model before "
                            "torch.jit.save, or compile and verify the file")
    layers = _layers(model)
    dynamic = [name for name, m in model.named_modules() if isinstance(m, nnqd.Linear)]
    if not layers and dynamic:
        raise QCompileError(
            f"the quantized layers of this model ({len(dynamic)}, e.g. '{dynamic[0]}') are "
            "dynamically quantized: their input qparams are chosen at run time, so there are no "
            "compile-time scales, int32 biases or multipliers to explain (the arithmetic is in "
            "qcompile/numerics/dynamic.py); `qcompile verify` checks them against PyTorch")
    if not layers:
        raise QCompileError("no quantized Conv2d/Linear found; pass the output of "
                            "torch.ao.quantization.convert")
    if layer is not None:
        names = [n for n, _ in layers]
        if layer not in names:
            raise QCompileError(f"unknown layer {layer!r}; quantized conv/linear layers: "
                                + ", ".join(names))
        layers = [(n, m) for n, m in layers if n == layer]
    qparams = _input_qparams(model, layers, example_inputs)
    return {"layers": [_explain_layer(n, m, qparams.get(n)) for n, m in layers],
            "contracts": {c.name: c.explain for c in contracts_for(EAGER)}}


def _g(value, fmt="{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def _span(lo, hi) -> str:
    return _g(lo) if lo == hi else f"{_g(lo)}..{_g(hi)}"


def format_explain(report: dict) -> str:
    """The report as a fixed-width table, one row per layer, then one legend line per contract."""
    if "amx" in report:  # a PT2E graph's
        from .explain_pt2e import format_explain_pt2e

        return format_explain_pt2e(report)
    rounded = [name for name in report["contracts"]  # contracts with an int32 bias
               if any("max_err_lsb" in (r["bias"] or {}).get(name, {}) for r in report["layers"])]
    head = ("layer", "kind", "in scale", "in zp", "w scale", "out scale", "out zp",
            f"bias err LSB {'/'.join(n[0] for n in rounded)}", "multiplier", "m0", "shift")
    rows = []
    for r in report["layers"]:
        inp, w, out, b, rq = r["input"] or {}, r["weight"], r["output"], r["bias"], r["requantize"]
        w_scale = _span(w["scale_min"], w["scale_max"])
        err = "-" if b is None else "/".join(f"{b[n]['max_err_lsb']:.2g}" for n in rounded)
        mult = "-" if rq is None else _span(rq["float32_min"], rq["float32_max"])
        shift = "-"
        if rq is not None:
            lo, hi = rq["shift_min"], rq["shift_max"]
            shift = str(rq["shift"]) + ("" if lo == hi else f" ({lo}..{hi})")
        rows.append((r["name"], r["kind"] + (f" g{r['groups']}" if r["groups"] > 1 else ""),
                     _g(inp.get("scale")), _g(inp.get("zero_point"), "{}"), w_scale,
                     _g(out["scale"]), str(out["zero_point"]), err, mult,
                     "-" if rq is None else str(rq["m0"]), shift))
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(row, widths)).rstrip() for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    lines.append("")
    lines += [f"{name:8s} {what}" for name, what in report["contracts"].items()]
    lines.append(f"(bias err: max |bias_q*sx*sw - b| / s_out for {'/'.join(rounded)}; "
                 "multiplier ~= m0 / 2^shift, first channel, (shift range))")
    return "\n".join(lines)
