"""Differential fuzzing (qcompile/fuzz.py): random quantized graphs under every contract.

The default run checks 50 graphs; `qcompile fuzz --n N --seed S` runs long ones."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings

import qcompile
from qcompile import fuzz
from qcompile.numerics import get_contract
from qcompile.cli import main


def test_fifty_random_graphs_stay_inside_their_contracts(tmp_path):
    summary = fuzz.run(50, seed=20261127, out_dir=str(tmp_path / "failures"), log=lambda m: None)
    assert summary["graphs"] == 50
    assert all(summary["by_contract"][c] > 0 for c in fuzz.fuzzed_contracts()), summary
    assert summary["failures"] == 0, [json.load(open(p)) for p in summary["failing_specs"]]


def test_the_comparison_has_teeth():
    """The same graphs compiled under the integer contract but judged bit-exact against fbgemm
    must fail somewhere (integer rounds the bias to int32 by design): a fuzzer that cannot
    see a one-step difference would pass anything."""
    seen = []

    @seed(7)
    @settings(max_examples=60, deadline=None, database=None, phases=["generate"],
              suppress_health_check=list(HealthCheck))
    @given(fuzz.graph_spec())
    def collect(spec):
        has_bias = spec["head"] or any(op["op"] in ("conv2d", "linear") for op in spec["ops"])
        # integer rounds biases, so it differs -- rarely on these small graphs: stop at one
        if fuzz.requantizing_ops(spec) >= 2 and has_bias and not any(v < 1 for v in seen):
            model, inputs = fuzz.build({**spec, "contract": "fbgemm"})
            compiled = qcompile.compile(model, inputs[:1], numerics="integer", tune_logs=False)
            seen.append(qcompile.verify(model, compiled, inputs)["bit_exact_fraction"])

    collect()
    assert seen and min(seen) < 1.0, seen


def test_failing_graphs_are_saved_and_replayable(tmp_path, monkeypatch):
    real_check = fuzz.check
    monkeypatch.setattr(fuzz, "check", lambda spec: {**real_check(spec), "ok": False})
    summary = fuzz.run(2, seed=3, out_dir=str(tmp_path), log=lambda m: None)
    assert summary["failures"] == 2 and len(summary["failing_specs"]) == 2
    monkeypatch.setattr(fuzz, "check", real_check)
    saved = json.load(open(summary["failing_specs"][0]))
    assert set(saved) == {"spec", "result"}
    assert fuzz.replay(summary["failing_specs"][0])["ok"] is True


def test_fuzz_command(tmp_path, capsys):
    out = tmp_path / "summary.json"
    assert main(["fuzz", "--n", "3", "--seed", "5", "--out-dir", str(tmp_path / "f"),
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["graphs"] == 3
    assert "outside the declared contract" in capsys.readouterr().out


# found by `qcompile fuzz --n 2000 --seed 0`: QNNPACK's add refuses a 1900x scale ratio
REFUSED_BY_QNNPACK = {'input': [1, 3, 4, 4],
     'ops': [{'op': 'add', 'a': 0, 'b': 0, 'relu': True},
             {'op': 'conv2d',
              'a': 1,
              'out': 6,
              'k': 1,
              'stride': 1,
              'groups': 1,
              'relu': False},
             {'op': 'add', 'a': 2, 'b': 2, 'relu': False},
             {'op': 'cat', 'a': 3, 'b': 3, 'relu': False},
             {'op': 'max_pool2d', 'a': 4}],
     'head': True,
     'classes': 9,
     'contract': 'qnnpack',
     'per_channel': False,
     'qparams_seed': 859,
     'input_scale': 5.0,
     'seed': 1981}


def test_a_graph_pytorch_refuses_is_refused_clearly():
    """qcompile refuses it too, as a QCompileError (raised inside a Relax pass it used to reach
    the user as a bare RuntimeError), and the fuzzer counts it inside the contract."""
    model, inputs = fuzz.build(REFUSED_BY_QNNPACK)
    with pytest.raises(qcompile.QCompileError, match="QNNPACK add cannot take these scales"):
        qcompile.compile(model, inputs[:1], numerics="qnnpack", tune_logs=False)
    result = fuzz.check(REFUSED_BY_QNNPACK)
    assert result["ok"] and "refused" in result


def test_a_spec_always_builds_the_same_graph():
    spec = {**REFUSED_BY_QNNPACK, "contract": "fbgemm"}
    (m1, x1), (m2, x2) = fuzz.build(spec), fuzz.build(spec)
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2
        if isinstance(v1, torch.Tensor):
            assert torch.equal(v1.int_repr() if v1.is_quantized else v1,
                               v2.int_repr() if v2.is_quantized else v2), k1


def test_qnnpack_add_with_a_32_bit_shift_is_refused():
    """Found by the 2000-graph run once the op set grew: inputs 2**-11 of the output scale give
    QNNPACK a 32-bit shift (undefined behaviour: PyTorch returns zo or zo + 1 at random)."""
    from qcompile.numerics.constants import qnnpack_add

    with pytest.raises(ValueError, match="shift would be 32 bits"):
        qnnpack_add(0.0096, 0.0096, 10.0)
    qnnpack_add(0.0096, 0.0096, 9.0)  # 2**-10 <= ratio: shift 31, defined


def test_integer_bound_grows_with_the_accumulator_step():
    """A 1x1 conv into a 1e-4 output scale: its int32 bias rounding moves the result by up to
    half an accumulator step, ~2 output steps here (the 2000-graph run's graph 474)."""
    spec = {"input": [1, 9, 10, 10], "head": False, "head_depth": 0, "classes": 1,
            "ops": [{"op": "conv2d", "a": 0, "out": 7, "k": 1, "stride": 1, "groups": 1,
                     "relu": True}],
            "contract": "integer", "per_channel": False, "qparams_seed": 0, "input_scale": 1.0,
            "seed": 3}
    model, _ = fuzz.build(spec)
    integer = get_contract("integer")
    model.layers[0].scale = 1e-4
    assert fuzz.layer_bound(model, integer) >= 2
    model.layers[0].scale = 1.0
    assert fuzz.layer_bound(model, integer) == 1
