"""The shipped tune logs: every record compile() would apply passes the correctness gate.

The gate checked each record when it was tuned; this re-checks the best record per workload
(the one MetaSchedule applies) with today's TVM, target and code, so a stale or damaged log
fails here, not silently in a user's model."""

from __future__ import annotations

import os

import pytest
import tvm_ffi

from qcompile.tuning import logs
from qcompile.tuning.gate import CorrectnessGate
from schedules import FAMILIES

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
