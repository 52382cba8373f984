"""The verify report: how far the compiled model is from PyTorch, in output LSBs."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..engines import quantized_engine
from ..errors import QCompileError
from ..numerics.contracts import EAGER, default_contract, get_contract


def float32_ulps(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """How many float32 values lie between each pair (0: the same bits, 1: neighbours)."""

    def ordered(x):
        bits = np.ascontiguousarray(x, np.float32).view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return np.abs(ordered(reference) - ordered(output))


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.dot(a, b) / ((np.linalg.norm(a) * np.linalg.norm(b)) or 1.0))


def min_sample_cosine(reference: np.ndarray, output: np.ndarray) -> float:
    """The smallest cosine of one sample (a sentence, an image: a row of a call's batch) of
    stacked runs [calls, batch, ...]; a call whose output has no batch axis is one sample."""
    ref, out = np.asarray(reference, np.float64), np.asarray(output, np.float64)
    samples = ref.shape[0] * (ref.shape[1] if ref.ndim > 2 else 1)
    ref, out = ref.reshape(samples, -1), out.reshape(samples, -1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return float(np.min((ref * out).sum(1) / np.where(norms > 0, norms, 1.0)))


def compare(reference: np.ndarray, output: np.ndarray, lsb: float | None) -> dict:
    """Element statistics of output vs reference, in steps of `lsb`; with lsb None (a float
    output, no quantized step) in float32 ULPs, and exactness as equal float32 bit patterns."""
    ref, out = np.asarray(reference, np.float64), np.asarray(output, np.float64)
    error = np.abs(ref - out)
    if lsb:
        exact = float(np.mean(ref == out))
        steps = np.rint(error / lsb).astype(np.int64)
        measured = f"output steps of the quantized output's LSB ({lsb:.6g})"
    else:
        bits = [np.ascontiguousarray(a, np.float32).view(np.uint32) for a in (reference, output)]
        exact = float(np.mean(bits[0] == bits[1]))
        steps = float32_ulps(reference, output)
        measured = ("float32 outputs (no quantized step): bit_exact_fraction counts equal bit "
                    "patterns; distances in float32 ULPs, absolute and relative error")
    with np.errstate(divide="ignore", invalid="ignore"):  # relative to 0: inf
        relative = np.where(error == 0, 0.0, error / np.abs(ref))
    values, counts = np.unique(steps, return_counts=True)
    histogram = {int(v): int(c) for v, c in zip(values, counts)}
    return {"bit_exact_fraction": exact, "max_abs_lsb": int(steps.max(initial=0)),
            "unit": "lsb" if lsb else "float32 ulp", "measured": measured,
            "max_abs_error": float(error.max(initial=0.0)),
            "max_rel_error": float(relative.max(initial=0.0)),
            "lsb_histogram": histogram, "cosine": _cosine(ref, out), "elements": int(ref.size),
            "distinct_reference_values": int(np.unique(ref).size)}


def _top1(ref_list, out_list) -> float | None:
    agree = []
    for r, o in zip(ref_list, out_list):
        if r.ndim < 2:
            return None
        r2, o2 = r.reshape(-1, r.shape[-1]), o.reshape(-1, o.shape[-1])
        agree.extend(list(r2.argmax(-1) == o2.argmax(-1)))
    return float(np.mean(agree)) if agree else None


def _probe_outputs(model, names):
    """Hooks recording the int8 output of each named module, per call."""
    modules = dict(model.named_modules())
    records = {n: [] for n in names}
    hooks = []
    for n in names:
        if n in modules:
            hooks.append(modules[n].register_forward_hook(
                lambda mod, inp, out, n=n: records[n].append(out.int_repr().numpy().copy())))
    return hooks, records


# the programs a PT2E model can be compared with: as exported (eager) and through torch.compile
PROGRAMS = {"pt2e": "the PT2E program run by PyTorch (quantized_decomposed ops between float ops)",
            "torch.compile": "the PT2E program compiled by torch.compile (Inductor, freezing)"}


def _reference(model, contract, engine):
    """(callable running the reference, engine or None, its name, its description)."""
    reference = contract.reference
    if reference.engine is not None:
        if engine in PROGRAMS:
            raise QCompileError(f"{engine!r} is a reference for PT2E models; this model runs on "
                                "PyTorch's quantized engines (fbgemm, qnnpack, x86)")
        engine = engine or reference.engine
        description = (reference.description if engine == reference.engine
                       else f"PyTorch's {engine} engine")
        return model, engine, engine, description
    program = engine or ("torch.compile" if reference.compiled else "pt2e")
    if program not in PROGRAMS:
        raise QCompileError(f"a PT2E model is compared with one of its programs "
                            f"({', '.join(PROGRAMS)}), not with engine {engine!r}")
    if program == "torch.compile":
        from ..inductor_program import compile_inductor

        return compile_inductor(model), None, program, PROGRAMS[program]
    return model, None, program, PROGRAMS[program]


def verify(model, compiled, inputs, engine=None, per_layer=False, float_model=None) -> dict:
    """Run `model` as the compiled contract's reference does and `compiled` on the same inputs;
    return the report.

    The reference is the contract's (numerics.contracts): a PyTorch quantized engine (`engine`
    names another one to compare with instead) or, for PT2E graphs, one of the model's programs
    (PROGRAMS: the contract's by default; `engine` "pt2e" or "torch.compile" picks one).  With
    `per_layer`, `compiled` must have been built with probe=True; the report then names the
    first quantized module whose 8-bit output differs (the eager program's layers: torch.compile
    keeps its intermediate tensors to itself).  With `float_model`, the report adds the cosine
    of both runs to the float model's output.
    """
    contract = get_contract(compiled.meta.get("numerics", default_contract(EAGER).name))
    run_reference, engine, reference_name, description = _reference(model, contract, engine)
    probes = compiled.meta.get("probes", []) if per_layer else []
    # a program reference (a PT2E graph) is probed node by node, an engine's modules by hooks
    graph_probes = engine is None and bool(probes)
    probe_hooks, records = _probe_outputs(model, [] if graph_probes else probes)
    refs, outs, first = [], [], None
    differing = {}  # layer -> [mismatching elements, elements, max steps], over all inputs
    # an emulated model runs all inputs in one process (per-layer probes need one at a time)
    batch = compiled.run_many(inputs) if hasattr(compiled, "run_many") and not per_layer \
        else None
    try:
        with (quantized_engine(engine) if engine else contextlib.nullcontext()), \
                torch.no_grad():
            for i, x in enumerate(inputs):
                xs = x if isinstance(x, (list, tuple)) else [x]
                if graph_probes:
                    from ..frontend.pt2e_import import reference_probes

                    ref, seen = reference_probes(model, xs, probes)
                    records = {n: [seen[n]] if n in seen else [] for n in probes}
                    if run_reference is not model:
                        ref = run_reference(*xs)
                    refs.append(ref.numpy())
                else:
                    refs.append(run_reference(*xs).numpy())
                got = batch[i] if batch is not None else compiled(*xs)
                if not isinstance(got, tuple):
                    got = (got,)
                outs.append(got[0])
                for name, value in zip(probes, got[len(got) - len(probes):]):
                    if not records[name]:
                        continue
                    ref_q = records[name][-1]
                    mismatches = int(np.sum(ref_q != value))
                    steps = int(np.abs(ref_q.astype(np.int32) - value).max(initial=0))
                    tally = differing.setdefault(name, [0, 0, 0])
                    tally[0] += mismatches
                    tally[1] += int(ref_q.size)
                    tally[2] = max(tally[2], steps)
                    if first is None and mismatches:
                        first = {"module": name, "mismatch_fraction": mismatches / ref_q.size,
                                 "max_abs_steps": steps}
    finally:
        for h in probe_hooks:
            h.remove()
    out_qp = compiled.meta.get("output_qparams")  # the frontend saw the output's dequantize
    lsb = out_qp[0] if out_qp else None
    report = compare(np.stack(refs), np.stack(outs), lsb)
    report.update({"top1_agreement": _top1(refs, outs), "inputs": len(refs),
                   "min_sample_cosine": min_sample_cosine(np.stack(refs), np.stack(outs)),
                   "engine": reference_name, "numerics": contract.name,
                   "reference": description,
                   "promise": contract.tolerance.description,
                   "threads": torch.get_num_threads(), "lsb": lsb})
    if float_model is not None:  # how far quantization itself moved the model, both runs
        with torch.no_grad():
            floats = np.stack([float_model(*(x if isinstance(x, (list, tuple)) else [x])).numpy()
                               for x in inputs])
        report["cosine_to_float"] = _cosine(np.stack(outs), floats)
        report["reference_cosine_to_float"] = _cosine(np.stack(refs), floats)
    if per_layer:
        report["first_divergent_layer"] = first
        report["layers_compared"] = len(differing)
        report["differing_layers"] = {
            n: {"mismatch_fraction": t[0] / t[1], "max_abs_steps": t[2]}
            for n, t in differing.items() if t[0]}
    return report
