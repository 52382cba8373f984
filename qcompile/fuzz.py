"""Differential fuzzing: random quantized graphs, compiled and compared with PyTorch.

A graph is a JSON-able spec (`graph_spec`, a hypothesis strategy): an input shape and a chain
of ops, each reading earlier values (a DAG).  Image graphs (1, C, H, W): conv2d (1x1/3x3,
stride 1/2, groups 1 or depthwise, fused relu or not), add / add_relu / mul and cat of two
same-shaped values, relu, hardtanh, hardswish, sigmoid, max / avg pool, and a global pool + a
chain of 1-3 linears.  Sequence graphs (1, T, F), one in four: linear (fused relu or not), add,
mul, relu, hardswish, sigmoid.  The float model is built from the
spec with seeded weights, quantized eagerly for the contract's engine, and then every output
scale and zero point is moved off its calibrated value (mostly within 10x, sometimes to the
extremes 1e-4 or 10; zero points anywhere in 0..255), so saturation and unusual requantize
multipliers are exercised, not only calibrated ranges; `distinct_outputs` in each result says
how much signal the output kept.

Contracts checked: every contract of eager models in the registry (numerics.contracts), each
against its reference engine and by its tolerance:
  exact            bit-exact with the reference (fbgemm, qnnpack: every graph);
  a layer bound    within the contract's steps for r = sx*sw/so of the conv or linear
                   (integer: floor(1 + r/2) LSB of fbgemm, 1 LSB while r < 2) for graphs with
                   one rounding op; longer graphs are run and reported, not judged: a one-step
                   difference can be amplified by any later scale ratio.
`qcompile fuzz --n N --seed S` runs N graphs and saves each failing spec as a reproducer.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import torch.ao.quantization as tq
import torch.nn as nn

from .engines import quantized_engine
from .errors import EngineLimitError
from .frontend import op_table
from .numerics.contracts import EAGER, contracts_for, get_contract


def fuzzed_contracts() -> tuple[str, ...]:
    """The contracts graphs are drawn for: those of eager models (graphs are quantized with
    torch.ao), as registered when the fuzzer runs."""
    return tuple(c.name for c in contracts_for(EAGER))
# the ops the generator draws (the op table's fuzz weights) and what each builds in the float
# model; ops whose lowering is exact (data movement, max) or an integer clamp do not round
ELEMENTWISE = {"relu": lambda: nn.ReLU(), "hardtanh": lambda: nn.Hardtanh(-0.5, 1.5),
               "hardswish": lambda: nn.Hardswish(), "sigmoid": lambda: nn.Sigmoid()}
POOLS = {"max_pool2d": lambda: nn.MaxPool2d(2), "avg_pool2d": lambda: nn.AvgPool2d(2)}
_NOT_ROUNDING = ("exact", "clamp")


def _unbuildable(kind: str) -> ValueError:
    return ValueError(f"the op table has the fuzzer draw {kind!r}, which qcompile/fuzz.py "
                      "cannot build: give it a builder")


def graph_spec():
    """Hypothesis strategy of graph specs (dicts; see the module docstring)."""
    from hypothesis import strategies as st

    @st.composite
    def sequence(draw):
        """A (1, T, F) input through linears (fused relu or not), adds, muls and activations."""
        t, f = draw(st.integers(1, 9)), draw(st.integers(1, 24))
        values, ops = [f], []
        for _ in range(draw(st.integers(1, 5))):
            src = draw(st.integers(0, len(values) - 1))
            kind = draw(st.sampled_from(op_table.fuzz_ops("sequence")))
            if kind in ("add", "mul"):
                other = draw(st.sampled_from([i for i, v in enumerate(values)
                                              if v == values[src]]))
                ops.append({"op": kind, "a": src, "b": other,
                            "relu": draw(st.booleans()) if kind == "add" else False})
                values.append(values[src])
            elif kind == "linear":
                out = draw(st.integers(1, 24))
                ops.append({"op": "linear", "a": src, "out": out, "relu": draw(st.booleans())})
                values.append(out)
            elif kind in ELEMENTWISE:
                ops.append({"op": kind, "a": src})
                values.append(values[src])
            else:
                raise _unbuildable(kind)
        return {"input": [1, t, f], "ops": ops, "head": False, "head_depth": 0, "classes": 1}

    @st.composite
    def spec(draw):
        common = {"contract": draw(st.sampled_from(fuzzed_contracts())),
                  "per_channel": draw(st.booleans()),
                  "qparams_seed": draw(st.integers(0, 2**31 - 1)),
                  "input_scale": draw(st.sampled_from([0.2, 1.0, 5.0])),
                  "seed": draw(st.integers(0, 2**31 - 1))}
        if draw(st.integers(0, 3)) == 0:
            return {**draw(sequence()), **common}
        return {**draw(image()), **common}

    @st.composite
    def image(draw):
        c = draw(st.integers(1, 12))
        hw = draw(st.integers(4, 11))
        values = [(c, hw)]  # (channels, size) of each value, the input first
        ops = []
        for _ in range(draw(st.integers(1, 5))):
            src = draw(st.integers(0, len(values) - 1))
            sc, shw = values[src]
            kind = draw(st.sampled_from(op_table.fuzz_ops("image")))
            if kind in ("add", "cat", "mul"):
                same = [i for i, v in enumerate(values) if v == values[src]]
                other = draw(st.sampled_from(same))
                ops.append({"op": kind, "a": src, "b": other,
                            "relu": draw(st.booleans()) if kind == "add" else False})
                values.append((sc * 2 if kind == "cat" else sc, shw))
            elif kind == "conv2d":
                k = draw(st.sampled_from([1, 3]))
                stride = draw(st.sampled_from([1, 2])) if shw >= 4 else 1
                depthwise = draw(st.booleans()) and k == 3
                out = sc if depthwise else draw(st.integers(1, 16))
                pad = k // 2
                ops.append({"op": "conv2d", "a": src, "out": out, "k": k, "stride": stride,
                            "groups": sc if depthwise else 1, "relu": draw(st.booleans())})
                values.append((out, (shw + 2 * pad - k) // stride + 1))
            elif kind in POOLS:
                if shw < 2:
                    continue
                ops.append({"op": kind, "a": src})
                values.append((sc, shw // 2))
            elif kind in ELEMENTWISE:
                ops.append({"op": kind, "a": src})
                values.append(values[src])
            else:
                raise _unbuildable(kind)
        head = draw(st.booleans())
        return {"input": [1, c, hw, hw], "ops": ops, "head": head,
                "head_depth": draw(st.integers(1, 3)) if head else 0,
                "classes": draw(st.integers(1, 10))}

    return spec()


class SpecModel(nn.Module):
    """The float model of a spec (QuantStub / DeQuantStub around it, FloatFunctional ops)."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        gen = torch.Generator().manual_seed(spec["seed"])
        # channels of an image value, features of a sequence value
        channels = [spec["input"][-1] if len(spec["input"]) == 3 else spec["input"][1]]
        self.layers = nn.ModuleList()
        for op in spec["ops"]:
            c = channels[op["a"]]
            if op["op"] == "linear":
                lin = nn.Linear(c, op["out"])
                with torch.no_grad():
                    lin.weight.uniform_(-1, 1, generator=gen)
                    lin.bias.uniform_(-1, 1, generator=gen)
                layer = torch.ao.nn.intrinsic.LinearReLU(lin, nn.ReLU()) if op["relu"] else lin
                channels.append(op["out"])
            elif op["op"] == "conv2d":
                conv = nn.Conv2d(c, op["out"], op["k"], op["stride"], op["k"] // 2,
                                 groups=op["groups"])
                with torch.no_grad():
                    conv.weight.uniform_(-1, 1, generator=gen)
                    conv.bias.uniform_(-1, 1, generator=gen)
                layer = torch.ao.nn.intrinsic.ConvReLU2d(conv, nn.ReLU()) if op["relu"] else conv
                channels.append(op["out"])
            elif op["op"] in ("add", "cat", "mul"):
                layer = torch.ao.nn.quantized.FloatFunctional()
                channels.append(c * 2 if op["op"] == "cat" else c)
            else:
                layer = {**ELEMENTWISE, **POOLS}[op["op"]]()
                channels.append(c)
            self.layers.append(layer)
        self.head = None
        if spec["head"]:  # global pool, then 1-3 linears (ReLU between them)
            self.pool = nn.AdaptiveAvgPool2d(1)
            sizes = [channels[-1]] + [spec["classes"] + 3 * i
                                      for i in range(spec.get("head_depth", 1) - 1, -1, -1)]
            layers = []
            for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
                lin = nn.Linear(n_in, n_out)
                with torch.no_grad():
                    lin.weight.uniform_(-1, 1, generator=gen)
                    lin.bias.uniform_(-1, 1, generator=gen)
                layers += [lin, nn.ReLU()] if i < len(sizes) - 2 else [lin]
            self.head = nn.Sequential(*layers)

    def forward(self, x):
        values = [self.quant(x)]
        for op, layer in zip(self.spec["ops"], self.layers):
            a = values[op["a"]]
            if op["op"] == "add":
                values.append(layer.add_relu(a, values[op["b"]]) if op["relu"]
                              else layer.add(a, values[op["b"]]))
            elif op["op"] == "mul":
                values.append(layer.mul(a, values[op["b"]]))
            elif op["op"] == "cat":
                values.append(layer.cat([a, values[op["b"]]], dim=1))
            else:
                values.append(layer(a))
        y = values[-1]
        if self.head is not None:
            y = self.head(torch.flatten(self.pool(y), 1))
        return self.dequant(y)


def build(spec: dict):
    """(quantized model, inputs) of a spec: eager quantization on the contract's engine, then
    random output qparams on every quantized module."""
    engine = get_contract(spec["contract"]).reference.engine
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    inputs = [torch.randn(spec["input"], generator=gen) * spec["input_scale"] for _ in range(3)]
    with torch.random.fork_rng(devices=[]):  # nothing may come from the global RNG
        torch.manual_seed(spec["seed"])
        model = SpecModel(spec).eval()
    weight = tq.default_per_channel_weight_observer if spec["per_channel"] and engine == "fbgemm" \
        else tq.default_weight_observer
    model.qconfig = tq.QConfig(activation=tq.default_observer, weight=weight)
    with quantized_engine(engine), torch.no_grad():
        tq.prepare(model, inplace=True)
        for x in inputs:
            model(x)
        tq.convert(model, inplace=True)
    rng = np.random.default_rng(spec["qparams_seed"])
    for module in model.modules():
        if isinstance(getattr(module, "scale", None), float):
            module.scale, module.zero_point = _perturbed_qparams(rng, module.scale,
                                                                 module.zero_point)
    return model, inputs


def _perturbed_qparams(rng, scale: float, zero_point: int) -> tuple[float, int]:
    """Output qparams off the calibrated ones: mostly within 10x of the calibrated scale (so
    the output keeps many distinct values), sometimes at the extremes (1e-4, 10: everything
    saturates or collapses); the zero point kept, moved, or anywhere in 0..255."""
    roll = rng.uniform()
    if roll < 0.1:
        scale = float(rng.choice([1e-4, 10.0]))
    else:
        scale = float(np.clip(scale * 10 ** rng.uniform(-1, 1), 1e-4, 10.0))
    roll = rng.uniform()
    if roll < 0.4:
        pass
    elif roll < 0.8:
        zero_point = int(np.clip(zero_point + rng.integers(-40, 41), 0, 255))
    else:
        zero_point = int(rng.integers(0, 256))
    return scale, zero_point


def layer_bound(model, contract) -> int:
    """How many output steps one layer of `model` may differ from the contract's reference: its
    tolerance's layer_steps of the largest r = sx*sw/so of the model's convs and linears
    (integer: the bias rounded to int32 at sx*sw is off by up to r / 2 output steps; with the
    two roundings, floor(1 + r/2), 1 while r < 2 as in calibrated models)."""
    in_scale = float(model.quant.scale)
    ratio = 0.0
    for m in model.modules():
        weight = getattr(m, "weight", None)
        if callable(weight) and isinstance(getattr(m, "scale", None), float):
            w = weight()
            sw = (w.q_per_channel_scales().max().item() if w.qscheme() in (
                torch.per_channel_affine, torch.per_channel_symmetric) else w.q_scale())
            ratio = max(ratio, in_scale * sw / m.scale)
    return contract.tolerance.layer_steps(ratio)


def requantizing_ops(spec: dict) -> int:
    """Ops of the graph that round (the head: a global average pool and a linear)."""
    head = 1 + spec.get("head_depth", 1) if spec["head"] else 0  # the pool and the linears
    return sum(op_table.BY_NAME[op["op"]].lowering not in _NOT_ROUNDING
               for op in spec["ops"]) + head


def _reference_refuses(model, inputs, engine: str) -> str | None:
    """PyTorch's own error when its engine cannot run the graph (e.g. QNNPACK's add refuses
    scale ratios outside [2**-14, 2**8)), else None."""
    try:
        with quantized_engine(engine), torch.no_grad():
            model(inputs[0])
    except Exception as err:  # noqa: BLE001 - whatever PyTorch raises
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return None


def check(spec: dict) -> dict:
    """Compile the spec's graph under its contract and compare; the result says whether it
    is inside the declared contract ("ok") and by how much it differs."""
    import qcompile

    model, inputs = build(spec)
    numerics = spec["contract"]
    contract = get_contract(numerics)
    try:
        compiled = qcompile.compile(model, inputs[:1], numerics=numerics, tune_logs=False)
    except qcompile.QCompileError as err:
        refused = _reference_refuses(model, inputs, contract.reference.engine)
        if refused is None and isinstance(err, EngineLimitError):
            refused = "runs, but outside the engine's defined range (undefined behaviour)"
        if refused is None:
            raise
        # the reference cannot run it either, and qcompile says so clearly: inside the contract
        return {"contract": numerics, "ok": True, "judged": False,
                "refused": {"pytorch": refused, "qcompile": str(err)[:200]}}
    try:
        report = qcompile.verify(model, compiled, inputs)
    except qcompile.QCompileError:
        raise
    except RuntimeError as err:  # PyTorch's engine cannot run a graph qcompile compiled (an
        # op it refuses sat in dead code, which qcompile drops): nothing to compare against
        return {"contract": numerics, "ok": True, "judged": False,
                "refused": {"pytorch": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}",
                            "qcompile": "compiled"}}
    result = {"contract": numerics, "bit_exact_fraction": report["bit_exact_fraction"],
              "max_abs_lsb": report["max_abs_lsb"], "requantizing_ops": requantizing_ops(spec),
              "distinct_outputs": report["distinct_reference_values"]}
    if contract.tolerance.exact:
        result["ok"] = report["bit_exact_fraction"] == 1.0
        result["judged"] = True
    else:  # judged where one layer rounds and the contract bounds a layer
        judged = result["requantizing_ops"] == 1 and contract.tolerance.layer_steps is not None
        if judged:
            result["bound_lsb"] = layer_bound(model, contract)
        result["ok"] = (report["max_abs_lsb"] <= result["bound_lsb"]) if judged else True
        result["judged"] = judged
    return result


def run(n: int, seed: int, out_dir: str = "fuzz-failures", log=print) -> dict:
    """Run n graphs (hypothesis, seeded); save failing specs to out_dir; return a summary."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    counts = {"graphs": 0, "failures": 0, "judged": 0, "errors": 0, "refused_by_both": 0}
    by_contract = {c: 0 for c in fuzzed_contracts()}
    failures = []
    start = time.time()

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=["generate"])
    @given(graph_spec())
    def one(spec):
        counts["graphs"] += 1
        by_contract[spec["contract"]] += 1
        try:
            result = check(spec)
        except Exception as err:  # noqa: BLE001 - a crash is a failure too: keep it
            result = {"ok": False, "judged": True, "error": f"{type(err).__name__}: {err}"[:500]}
            counts["errors"] += 1
        counts["judged"] += int(result["judged"])
        counts["refused_by_both"] += int("refused" in result)
        if not result["ok"]:
            counts["failures"] += 1
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, f"graph-{seed}-{counts['graphs']}.json")
            with open(path, "w") as f:
                json.dump({"spec": spec, "result": result}, f, indent=1)
            failures.append(path)
            log(f"[fuzz] FAIL {path}: {result}")
        if counts["graphs"] % 10 == 0:
            rate = counts["graphs"] / max(time.time() - start, 1e-9)
            log(f"[fuzz] {counts['graphs']}/{n} graphs, {counts['failures']} outside the contract"
                f" ({rate * 60:.0f} graphs/min)")

    one()
    summary = {**counts, "by_contract": by_contract, "seed": seed, "failing_specs": failures,
               "seconds": round(time.time() - start, 1)}
    contracts = ", ".join(f"{k} {v}" for k, v in by_contract.items())
    log(f"[fuzz] {summary['graphs']} graphs ({contracts})"
        f", {summary['failures']} outside the declared contract, {summary['errors']} crashes, "
        f"{summary['refused_by_both']} refused by PyTorch and qcompile alike, "
        f"{summary['seconds']:.0f} s")
    return summary


def replay(path: str) -> dict:
    """Re-check a saved failing spec (a reproducer written by run)."""
    with open(path) as f:
        return check(json.load(f)["spec"])


__all__ = ["graph_spec", "build", "check", "run", "replay"]
