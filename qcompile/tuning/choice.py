"""Which schedule a kernel takes from tune logs: a tuned record only where it measured faster
than the kernel's default schedule, measured beside it on the same machine.

`qcompile tune` measures each kernel's default schedule first and stores it as a record: a
trace with no sampled decision (`is_default`).  A kernel's records are found as MetaSchedule
finds them (structurally equal workload), else up to their quantization constants
(`logs.kernel_shape_key`: the same layer calibrated on other data).  Among them the fastest
tuned record is used when its mean time is at least MIN_GAIN below the default's; otherwise
the kernel keeps the default schedule ("kept_default"), and so does a kernel whose records
hold no default measurement ("unmeasured_default": logs written before tune measured
defaults; rerunning `qcompile tune` on them measures it).
"""

from __future__ import annotations

import warnings

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from .logs import kernel_shape_key

# A tuned record must measure this much faster than the default to be used.  Each time is the
# mean of 10 cold calls; the best of a kernel's candidates is the least of many noisy means,
# so a record a hair faster is as likely noise as gain.
MIN_GAIN = 0.03

# a measured run at or above this is MetaSchedule's "failed" marker, not a time
FAILED_SECS = 1e9

# how compile() reports a kernel this module decided (schedules.default_cpu keeps them)
TUNED, TUNED_NEAR = "tuned", "tuned_near"
KEPT_DEFAULT, UNMEASURED_DEFAULT = "kept_default", "unmeasured_default"


def measured_secs(run_secs, error_msg: str | None = None) -> float | None:
    """The mean of a run's measured times (a record's or a runner result's), or None for a
    failed (an error, or FAILED_SECS) or unmeasured one."""
    secs = [float(s) for s in (run_secs or [])]
    if error_msg is not None or not secs or max(secs) >= FAILED_SECS:
        return None
    return sum(secs) / len(secs)


def mean_secs(record: ms.database.TuningRecord) -> float | None:
    """A record's mean measured time, or None for a failed or unmeasured one."""
    return measured_secs(record.run_secs)


def is_default(record: ms.database.TuningRecord) -> bool:
    """True for a record of the default schedule: its trace samples nothing."""
    return len(record.trace.decisions) == 0


def choose(records) -> tuple[ms.database.TuningRecord | None, str | None]:
    """(the tuned record to use or None, why): "tuned", "kept_default" (tuned records, none
    faster enough), "unmeasured_default", or (None, None) when there is no measured tuned
    record (a kernel whose default alone was measured is not tuned)."""
    default, tuned = None, None
    for record in records:
        secs = mean_secs(record)
        if secs is None:
            continue
        if is_default(record):
            default = secs if default is None else min(default, secs)
        elif tuned is None or secs < tuned[0]:
            tuned = (secs, record)
    if tuned is None:
        return None, None
    if default is None:
        return None, UNMEASURED_DEFAULT
    if tuned[0] <= default * (1.0 - MIN_GAIN):
        return tuned[1], TUNED
    return None, KEPT_DEFAULT


def default_secs(records) -> float | None:
    """The best measured time of the default-schedule records among `records`."""
    times = [mean_secs(r) for r in records if is_default(r)]
    times = [t for t in times if t is not None]
    return min(times) if times else None


def workload_records(database: ms.database.Database, mod: tvm.IRModule) -> list:
    """Every record `database` holds for the workload `mod` (its file is not written to)."""
    if not database.has_workload(mod):
        return []
    return list(database.get_top_k(database.commit_workload(mod), 1 << 30))


# database -> {kernel_shape_key: [records]}
_SHAPE_INDEX: dict = {}


def _shape_index(database: ms.database.Database) -> dict:
    """The measured records of one database grouped by kernel shape (computed once)."""
    if database not in _SHAPE_INDEX:
        index, keys = {}, {}
        for record in database.get_all_tuning_records():
            if mean_secs(record) is None:
                continue
            workload = record.workload.mod
            whash = tvm_ffi.structural_hash(workload)
            if whash not in keys:
                keys[whash] = kernel_shape_key(workload["main"])
            index.setdefault(keys[whash], []).append(record)
        _SHAPE_INDEX[database] = index
    return _SHAPE_INDEX[database]


class TuneLogs:
    """The records of some databases, looked up per kernel exactly, then up to constants."""

    def __init__(self, databases: list[ms.database.Database]):
        self.databases = list(databases)
        self._near = None

    def records(self, mod: tvm.IRModule) -> list:
        """Records for the kernel `mod` (a normalized one-function module): those of its
        workload, and where they lack a default or a tuned record, those of the same kernel
        up to its quantization constants too (a work dir holds both when the kernel was
        tuned for one calibration and its default measured for another)."""
        exact = [r for db in self.databases for r in workload_records(db, mod)]
        if any(map(is_default, exact)) and not all(map(is_default, exact)):
            return exact
        if self._near is None:
            self._near = {}
            for database in self.databases:
                for key, records in _shape_index(database).items():
                    self._near.setdefault(key, []).extend(records)
        near = self._near.get(kernel_shape_key(mod["main"]), []) if self._near else []
        return near or exact

    def lookup(self, mod: tvm.IRModule) -> tuple[ms.database.TuningRecord | None, str | None]:
        """(record to apply or None, how: "tuned", "tuned_near" (a record of the kernel for
        other quantization constants), "kept_default", "unmeasured_default", or None when the
        logs know nothing of the kernel)."""
        record, how = choose(self.records(mod))
        if how == TUNED and (tvm_ffi.structural_hash(record.workload.mod)
                             != tvm_ffi.structural_hash(mod)):
            how = TUNED_NEAR
        return record, how


def apply_tune_logs(tune_logs: TuneLogs, report: dict | None = None) -> tvm.transform.Pass:
    """Schedule each unscheduled PrimFunc with the trace of the record `tune_logs` chooses for
    it (its own constants kept); the others are left to the default schedule.  `report`
    receives {function name: how} for every kernel the logs know (see TuneLogs.lookup)."""
    from tvm import s_tir
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    from ..schedules.common import is_scheduled, primfunc_pass

    def rewrite(gvar, func):
        if is_scheduled(func):
            return None
        mod = _normalize_mod(func)
        record, how = tune_logs.lookup(mod)
        if how is not None and report is not None:
            report[gvar.name_hint] = how
        if record is None:
            return None
        sch = s_tir.Schedule(mod)
        try:
            record.trace.apply_to_schedule(sch, remove_postproc=False)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:  # the default does it
            warnings.warn(f"tune log record for {gvar.name_hint} does not apply: "
                          f"{str(err).splitlines()[0]}", stacklevel=1)
            if report is not None:
                report.pop(gvar.name_hint, None)
            return None
        tuned = sch.mod["main"]
        return tvm.tirx.PrimFunc(tuned.params, tuned.body, tuned.ret_type,
                                 attrs=func.attrs).with_attr("tirx.is_scheduled", True)

    return primfunc_pass("qcompile.ApplyTuneLogs", rewrite)
