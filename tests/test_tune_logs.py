"""The shipped tune logs: every record compile() would apply passes the correctness gate.

The gate checked each record when it was tuned; this re-checks the best record per workload
(the one MetaSchedule applies) with today's TVM, target and code, so a stale or damaged log
fails here, not silently in a user's model."""

from __future__ import annotations

import json
import os

import pytest
import torch
import tvm_ffi

from qcompile.compiler import driver as compiler
from qcompile.compiler.driver import schedule_summary
from qcompile.numerics import get_contract
from qcompile import rekey
from qcompile.tuning import logs
from qcompile.tuning.choice import TuneLogs
from qcompile.tuning.gate import CorrectnessGate
from qcompile.schedules import FAMILIES

from helpers import inputs_like, quantize_eager, seeded

FAMILY = FAMILIES["x86-avx512-vnni"]
ROOT = os.path.join(logs.shipped_root(), FAMILY.name)
DATABASES = logs.database_dirs(ROOT) if os.path.isdir(ROOT) else []


def _best_records(directory):
    database = logs.open_database(directory)
    seen, best = set(), []
    for record in database.get_all_tuning_records():
        key = tvm_ffi.structural_hash(record.workload.mod)
        if key in seen:
            continue
        seen.add(key)
        top = database.get_top_k(database.commit_workload(record.workload.mod), 1)
        if top:
            best.append(top[0])
    return best


def _check(directory):
    gate = CorrectnessGate(FAMILY.tvm_target())
    records = _best_records(directory)
    assert records, f"{directory} holds no tuning record"
    bad = [why for why in (gate.check_record(r) for r in records) if why is not None]
    assert not bad, bad


def test_shipped_logs_exist_with_provenance():
    names = sorted(os.path.basename(d) for d in DATABASES)
    assert names == ["bert_ffn", "mobilenet_v2", "mobilenet_v3_small", "resnet18"], names
    for d in DATABASES:
        assert os.path.exists(os.path.join(d, logs.PROVENANCE)), d


@pytest.mark.skipif(not FAMILY.runs_here(), reason="needs AVX-512 VNNI")
def test_bert_ffn_log_passes_the_gate():
    _check(os.path.join(ROOT, "bert_ffn"))


@pytest.mark.slow
@pytest.mark.skipif(not FAMILY.runs_here(), reason="needs AVX-512 VNNI")
@pytest.mark.parametrize("directory", DATABASES, ids=os.path.basename)
def test_every_shipped_log_passes_the_gate(directory):
    _check(directory)


@pytest.mark.parametrize("directory", DATABASES, ids=os.path.basename)
def test_shipped_logs_reach_every_kernel_of_their_model(directory):
    """A change to what a kernel computes (not its loops) makes MetaSchedule miss its records
    silently: compile() then schedules the kernel by default.  Every tunable kernel of the
    log's model, as today's code extracts it, must be found (exactly or up to constants)."""
    found = TuneLogs([logs.open_database(directory)])
    missed = [name for name, mod in rekey.logged_model_kernels(directory)
              if not found.records(mod)]
    assert not missed, (f"{len(missed)} kernels have no record, e.g. {missed[:3]}: re-key the "
                        f"logs (python -m qcompile.rekey) or retune")


def _conv_kernel(size: int, scale: float, shift: float):
    """The fused PrimFunc of one quantized conv (no activation: its output zero point moves
    with the calibration), calibrated on inputs of the given scale and shift."""
    xs = inputs_like((1, 16, size, size), n=2, scale=scale, shift=shift)
    model = quantize_eager(seeded(torch.nn.Conv2d(16, 32, 3, padding=1), 4), xs)
    integer, _, _ = compiler.integer_module(model, [xs[0].numpy()], get_contract("fbgemm"), 2,
                                             FAMILY)
    fused = compiler.fuse(integer, FAMILY.tvm_target(), FAMILY)
    (conv,) = [f for g, f in fused.functions.items() if "conv" in g.name_hint]
    return conv


def test_kernel_key_ignores_quantization_constants_and_keeps_shapes():
    """A zoo model calibrated on another CPU has other scale and zero point literals in its
    kernels: MetaSchedule's exact lookup misses them, kernel_shape_key does not."""
    base = _conv_kernel(14, 2.0, 0.0)
    recalibrated = _conv_kernel(14, 3.0, 0.5)
    assert not tvm_ffi.structural_equal(base, recalibrated)
    assert logs.kernel_shape_key(base) == logs.kernel_shape_key(recalibrated)
    assert logs.kernel_shape_key(base) != logs.kernel_shape_key(_conv_kernel(12, 2.0, 0.0))


def test_schedule_summary_names_a_few_untuned_kernels_and_counts_the_rest():
    names = [f"fused_conv2d_packed{i}" for i in range(logs.SHOWN_NAMES + 5)]
    kernels = {"tuned": ["a"], "tuned_near": [], "tensorized": names, "window": [], "generic": []}
    text = schedule_summary(kernels, ["tune_logs/x86"])
    assert text.startswith(f"kernels: 1 of {len(names) + 1} from tune logs")
    assert names[logs.SHOWN_NAMES - 1] in text and names[logs.SHOWN_NAMES] not in text
    assert "and 5 more" in text


def test_schedule_summary_says_which_kernels_kept_the_default_and_why():
    kernels = {"tuned": ["a"], "kept_default": ["b", "c"], "unmeasured_default": ["d"],
               "tensorized": ["e"]}
    text = schedule_summary(kernels, ["w"])
    assert text.startswith("kernels: 1 of 5 from tune logs (1 database(s)), 4 tensorized by "
                           "default"), text
    assert "2 kept the default schedule: their tuned records measured less than 3% faster" in text
    assert "1 kept the default schedule: their logs hold no measurement of it" in text
    assert "not tuned in the logs: e" in text


def test_shipped_logs_apply_on_the_cpu_family_they_were_tuned_on(tmp_path):
    # Zen 4-tuned schedules ran ResNet-18 8 % slower than the defaults on Zen 5: shipped logs
    # apply by themselves only where they were tuned; a dir the user names applies anyway
    made = {}
    for name, signature in (("same", "V family 1"), ("other", "V family 2"), ("unsaid", None)):
        d = tmp_path / name
        d.mkdir()
        (d / logs.PROVENANCE).write_text(json.dumps({"cpu_signature": signature}))
        made[name] = str(d)
    applied, skipped = logs.shipped_for_this_cpu(sorted(made.values()), "V family 1")
    assert applied == [made["same"], made["unsaid"]] and skipped == [made["other"]]
    assert logs.shipped_for_this_cpu([made["other"]], None) == ([made["other"]], [])
    # every shipped database says where it was tuned, so the rule can hold for it
    for directory in DATABASES:
        assert logs.tuned_on(directory), directory
    # a cross target's logs (timed on a board) do not depend on this host
    applied, skipped = logs.resolve_tune_logs(True, FAMILY.name, runs_here=False)
    assert applied == DATABASES and skipped == []
    text = schedule_summary({"tuned": [], "tuned_near": [], "tensorized": ["k"], "window": [],
                             "generic": []}, [], [made["other"]])
    assert "1 shipped tune log(s) not applied: tuned on V family 2" in text
    assert f"--tune-logs {tmp_path}" in text
