"""Tuning: a short MetaSchedule run on one small task (XGBoost cost model), interrupted and
resumed, with a space that deliberately produces wrong candidates the gate must reject."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest
import torch
from tvm import s_tir
from tvm.s_tir import TensorIntrin
from tvm.s_tir import meta_schedule as ms
from tvm.script import tirx as T

import qcompile
from qcompile.errors import TuningInterrupted
from qcompile.tuning import choice, logs
from qcompile.tuning.gate import CorrectnessGate
from qcompile.schedules import packed, resolve_family
from qcompile.schedules.dot_product import dot_product_desc

from helpers import inputs_like, quantize_eager, seeded

BROKEN = "qcompile_test_vnni_off_by_one_local"


@T.prim_func(s_tir=True)
def _broken_impl(A: T.Buffer((4,), "uint8", offset_factor=1),
                 B: T.Buffer((16, 4), "int8", offset_factor=1),
                 C: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a_word = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(a_word, 16), dtype="uint8x64"),
            B.vload([0, 0], dtype="int8x64"), dtype="int32x16") + T.broadcast(T.int32(1), 16)


TensorIntrin.register(BROKEN, dot_product_desc(16, 4, "local"), _broken_impl, override=True)


def _has_vnni() -> bool:
    return resolve_family("x86-avx512-vnni").runs_here()


def _half_broken_space(family):
    """Two design spaces: the family's template, and the same template tensorized with an
    off-by-one intrinsic: fast, plausible and wrong, what MetaSchedule alone would keep."""
    broken = dataclasses.replace(family, dot_intrinsic=BROKEN)

    def apply(sch: s_tir.Schedule):
        wrong = sch.copy()
        packed.schedule_conv(sch, family, search=True)
        packed.schedule_conv(wrong, broken, search=True)
        return [sch, wrong]

    return ms.space_generator.ScheduleFn(apply, sch_rules=[], postprocs=[],
                                         mutator_probs={ms.mutator.MutateTileSize(): 1.0})


def _small_conv_model(calibration):
    body = torch.nn.Sequential(seeded(torch.nn.Conv2d(16, 32, 3, padding=1), 4), torch.nn.ReLU())
    return quantize_eager(body, calibration, fuse=[["body.0", "body.1"]])


@pytest.fixture(scope="module")
def small_conv():
    xs = inputs_like((1, 16, 14, 14), n=3, scale=2.0)
    return _small_conv_model(xs), xs


@pytest.mark.skipif(not _has_vnni(), reason="tunes the AVX-512 VNNI kernels")
def test_tune_interrupted_resumed_gated_and_applied(small_conv, tmp_path):
    model, xs = small_conv
    family = resolve_family("x86-avx512-vnni")
    work = str(tmp_path / "work")
    lines = []

    def interrupt_after_first_batch(line):
        lines.append(line)
        if line.startswith("[tune] ") and "trials |" in line:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, arriving inside a TVM callback

    # 1. interrupted after its first measured batch (the interrupt crosses TVM's FFI)
    with pytest.raises(TuningInterrupted, match=r"interrupted after 4 of 8 trials.*kept in"):
        qcompile.tune(model, xs[:1], target=family.name, trials=8, work_dir=work,
                      trials_per_iter=4, out=interrupt_after_first_batch)
    with open(os.path.join(work, logs.RECORDS)) as f:
        kept = [json.loads(line) for line in f if line.strip()]
    assert kept, "the records measured before the interruption must be on disk"
    defaults = sum(map(choice.is_default, logs.open_database(work).get_all_tuning_records()))

    # 2. resumed: counts what is on disk, runs the rest, the gate rejects the broken kernels
    lines.clear()
    report = qcompile.tune(model, xs[:1], target=family.name, trials=16, work_dir=work,
                           trials_per_iter=4, out=lines.append, space=_half_broken_space(family))
    # the default schedule's records (measured first; the search may time it again) are not
    # trials
    assert defaults >= 1 and report["trials_before"] == len(kept) - defaults > 0
    assert report["trials_run"] >= 16 - report["trials_before"]
    assert report["candidates_rejected"] >= 1, report
    assert all("differ from the reference" in why for why in report["rejections"]), report
    assert any("best" in line and "ETA" in line for line in lines)
    assert os.path.exists(os.path.join(work, "tuning_curve.png"))

    # 3. only correct kernels are in the database
    database = logs.open_database(work)
    records = database.get_all_tuning_records()
    assert records
    gate = CorrectnessGate(family.tvm_target())
    assert all(gate.check_record(r) is None for r in records)

    # 4. compile takes the record where it measured faster than the default (which one wins
    # depends on the timings: tests below fix them) and stays bit-exact
    compiled = qcompile.compile(model, xs[:1], target=family.name, tune_logs=work)
    (how,) = _conv_schedules(compiled)
    assert how in ("tuned", "kept_default"), compiled.meta["kernel_schedules"]
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


def _conv_schedules(compiled) -> list[str]:
    return [how for name, how in compiled.meta["kernel_schedules"].items() if "conv" in name]


def _logs_with_times(model, xs, family, work, default_s, tuned_s) -> str:
    """A tuning database for the model's kernels holding a default-schedule record measured
    at `default_s` and a tuned one (tiles sampled from the design space) at `tuned_s` (None:
    no such record): timings fixed, no search."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    from qcompile.compiler.driver import model_contract
    from qcompile.compiler.tune import extract_tasks

    os.makedirs(work, exist_ok=True)
    db = ms.database.JSONDatabase(os.path.join(work, logs.WORKLOADS),
                                  os.path.join(work, logs.RECORDS))
    for task in extract_tasks(model, xs[:1], family, model_contract(model, None), 2):
        mod = _normalize_mod(task.dispatched[0])
        workload = db.commit_workload(mod)
        args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        for secs, search in ((default_s, False), (tuned_s, True)):
            if secs is None:
                continue
            sch = s_tir.Schedule(mod, seed=1)
            packed.schedule_packed(sch, family, search=search)
            assert bool(sch.trace.decisions) == search
            db.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, workload, [secs] * 3, family.tvm_target(), args))
    return work


@pytest.mark.skipif(not _has_vnni(), reason="tunes the AVX-512 VNNI kernels")
@pytest.mark.parametrize("default_s, tuned_s, expected", [
    (1.0e-4, 1.5e-4, "kept_default"),   # a deliberately slow tuned record
    (1.0e-4, 0.99e-4, "kept_default"),  # faster by less than choice.MIN_GAIN: noise
    (1.0e-4, 0.5e-4, "tuned"),
    (None, 0.5e-4, "unmeasured_default"),  # logs without the default measured beside them
])
def test_a_tuned_record_is_used_only_where_it_measured_faster_than_the_default(
        small_conv, tmp_path, default_s, tuned_s, expected):
    model, xs = small_conv
    family = resolve_family("x86-avx512-vnni")
    work = _logs_with_times(model, xs, family, str(tmp_path / "db"), default_s, tuned_s)
    compiled = qcompile.compile(model, xs[:1], target=family.name, tune_logs=work)
    assert _conv_schedules(compiled) == [expected], compiled.meta["kernel_schedules"]
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report

    # the same layers calibrated on other data (other scale and zero point literals in the
    # kernel) are chosen for alike, through the lookup up to quantization constants
    other_xs = inputs_like((1, 16, 14, 14), n=3, scale=3.0, shift=0.5, seed=1)
    other = _small_conv_model(other_xs)
    compiled = qcompile.compile(other, other_xs[:1], target=family.name, tune_logs=work)
    near = {"tuned": "tuned_near"}.get(expected, expected)
    assert _conv_schedules(compiled) == [near], compiled.meta["kernel_schedules"]
    report = qcompile.verify(other, compiled, other_xs)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


def test_corrupt_tune_log_line_is_skipped_with_a_warning(small_conv, tmp_path):
    """A damaged record line costs that record only."""
    model, xs = small_conv
    family = resolve_family("x86")
    work = tmp_path / "db"
    work.mkdir()
    (work / logs.WORKLOADS).write_text("")
    (work / logs.RECORDS).write_text('{"not": "closed"\n')
    with pytest.warns(UserWarning, match="corrupt line"):
        compiled = qcompile.compile(model, xs[:1], target=family.name, tune_logs=str(work))
    assert compiled.meta["kernels"]["tuned"] == 0
    out = compiled(xs[0])
    assert np.isfinite(out).all()


def _stack(layers: int):
    """conv 3x3 + relu, then 1x1 convs: the first `layers` of them, quantized (fbgemm).  The
    first conv's kernel is the same in every stack of two or more layers."""
    convs = [torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.Conv2d(32, 16, 1),
             torch.nn.Conv2d(16, 8, 1)][:layers]
    modules, fuse = [], []
    for i, conv in enumerate(convs):
        modules.append(seeded(conv, 4 + i))
        if i < len(convs) - 1:
            fuse.append([f"body.{len(modules) - 1}", f"body.{len(modules)}"])
            modules.append(torch.nn.ReLU())
    xs = inputs_like((1, 16, 14, 14), n=3, scale=2.0)
    return quantize_eager(torch.nn.Sequential(*modules), xs, fuse=fuse), xs


@pytest.mark.skipif(not _has_vnni(), reason="tunes the AVX-512 VNNI kernels")
def test_a_rerun_tunes_only_the_kernels_below_their_share(tmp_path):
    """Kernels new to a work dir (a model grown by a layer, or workloads changed with the
    code) are tuned on a rerun; a kernel that has its share is left alone."""
    family = resolve_family("x86-avx512-vnni")
    work = str(tmp_path / "work")
    model, xs = _stack(2)
    first = qcompile.tune(model, xs[:1], target=family.name, trials_per_task=1, work_dir=work,
                          trials_per_iter=1, out=lambda line: None)
    assert first["trials_run"] == 2 and len(first["tasks"]) == 2, first["tasks"]

    # the grown stack: the first conv's kernel is unchanged, the second now ends in a relu
    # and writes uint8 (a new workload), the third is new
    model, xs = _stack(3)
    lines = []
    second = qcompile.tune(model, xs[:1], target=family.name, trials_per_task=1, work_dir=work,
                           trials_per_iter=1, out=lines.append)
    assert second["trials_before"] == 1 and second["trials_run"] == 2, second
    (announce,) = [line for line in lines if "to run on" in line]
    assert "2 to run on the 2 tasks below their share" in announce, announce
    # only the new kernels' defaults are measured: the first one's is in the work dir
    assert any("default schedule of 2 kernel(s)" in line for line in lines), lines
    had = [t["name"] for t in second["tasks"] if t["trials_before"]]
    assert len(had) == 1, second["tasks"]
    measured = [line for line in lines if "trials | task" in line]
    assert len(measured) == 2 and not any(had[0] + ":" in line for line in measured), measured
    assert all(t["best_ms"] is not None for t in second["tasks"]), second["tasks"]


def _one_schedule_space(family):
    """A design space of exactly one schedule (the default tiles, nothing sampled)."""
    def apply(sch: s_tir.Schedule):
        packed.schedule_conv(sch, family, search=False)
        return [sch]

    return ms.space_generator.ScheduleFn(apply, sch_rules=[], postprocs=[], mutator_probs={})


@pytest.mark.skipif(not _has_vnni(), reason="tunes the AVX-512 VNNI kernels")
def test_a_task_whose_search_comes_back_empty_ends_at_once(small_conv, tmp_path):
    # MetaSchedule's evolutionary search answers a task with nothing untried by an empty batch
    # and gives up only after five of them, each a whole evolution (10-40 s on 2 cores for a
    # real kernel): garden:resnet50 idled ten minutes this way.  One empty batch ends the task.
    model, xs = small_conv
    family = resolve_family("x86-avx512-vnni")
    lines = []
    report = qcompile.tune(model, xs[:1], target=family.name, trials=8,
                           work_dir=str(tmp_path / "w"), trials_per_iter=4,
                           out=lines.append, space=_one_schedule_space(family))
    assert report["trials_run"] == 1, report
    empty = [line for line in lines if "no untried schedule" in line]
    assert len(empty) == 1, lines  # without the callback: five
    assert len(report["tasks_exhausted"]) == 1, report
    assert any("found nothing new to try" in line for line in lines), lines


def test_budget_parses_and_allots_by_runtime_share():
    from qcompile.errors import QCompileError
    from qcompile.tuning import budget

    assert budget.parse_budget("30m") == 1800 and budget.parse_budget("1h30m") == 5400
    assert budget.parse_budget("90s") == 90 and budget.parse_budget("2") == 120
    with pytest.raises(QCompileError, match="30m, 1h"):
        budget.parse_budget("30 minutes")
    # whole batches by share (12 of 8 here: 7.6, 3.8, 0.6, the two left to the largest
    # remainders); a kernel whose share rounds to no batch keeps its default
    assert budget.allot([6.0, 3.0, 0.5, None], 100, 8) == [56, 32, 8, 0]
    assert budget.allot([6.0, 3.0, 0.1, None], 100, 8) == [64, 32, 0, 0]


@pytest.mark.skipif(not _has_vnni(), reason="tunes the AVX-512 VNNI kernels")
def test_a_budgeted_run_measures_defaults_first_and_reports_each_task(tmp_path):
    model, xs = _stack(3)
    family = resolve_family("x86-avx512-vnni")
    work = str(tmp_path / "w")
    lines = []
    report = qcompile.tune(model, xs[:1], target=family.name, work_dir=work, budget="40s",
                           trials_per_iter=2, out=lines.append)
    assert report["budget_s"] == 40 and report["default_model_ms"] > 0, report
    # the three defaults first (a winner's default is measured once more at the end)
    first = lines[:next(k for k, line in enumerate(lines) if "to run on" in line)]
    assert sum(1 for line in first if line.startswith("[tune] default ")) == 3, lines
    tuned = [t for t in report["tasks"] if t["trials_run"]]
    assert tuned and all(t["default_ms"] and t["best_ms"] <= t["default_ms"] for t in tuned)
    # (which kernel gets the most trials follows measured times: test_budget_parses_and_allots...
    # fixes them)
    closing = [line for line in lines if line.startswith("[tune] finished task")]
    # one per task allotted trials (a task the deadline ended before its turn: 0 trials)
    assert len(closing) >= len(tuned) and all("default" in c and "-> best" in c for c in closing)
    assert len({c.split()[4] for c in closing}) == len(closing), closing
    # the curve starts at the default schedules' estimate
    with open(os.path.join(work, "tuning_curve.json")) as f:
        curve = json.load(f)
    # (a winner's default measured again can only lower the report's figure)
    assert curve[0][1] >= report["default_model_ms"] * (1 - 1e-6), (curve[0], report)
    # a live bar on every measured batch
    assert any(line.startswith("[tune] [#") and "trials |" in line for line in lines), lines
