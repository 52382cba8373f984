"""Each kernel's default schedule, measured before any search and stored as a record.

The record is what compile() compares a tuned record with (tuning.choice: a tuned schedule is
used only where it measured faster), the search's first member (MetaSchedule's evolutionary
search starts from the database's best records), the tuning curve's first point and each
task's "default vs best" line.  It is built and timed by the run's own builder and runner, so
it is measured exactly as the candidates are.
"""

from __future__ import annotations

import time

from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

from ..schedules import packed
from .choice import default_secs, mean_secs, workload_records


def measure_defaults(tasks, family, database: ms.database.Database, builder, runner,
                     out=print, again: list[int] | None = None) -> list[float | None]:
    """Seconds of each task's default schedule (None if it failed to build or run): from the
    database where it holds a default-schedule record, else built, timed and committed now.
    `again`: the tasks whose default is measured once more (another record: the best of the
    default's records is what a tuned one must beat, so a first measurement slowed by noise
    cannot make a tuned record look like a win)."""
    target = family.tvm_target()
    mods = [_normalize_mod(t.dispatched[0]) for t in tasks]
    secs = [default_secs(workload_records(database, mod)) for mod in mods]
    todo = sorted(set(i for i, s in enumerate(secs) if s is None) | set(again or ()))
    if not todo:
        return secs
    out(f"[tune] measuring the default schedule of {len(todo)} kernel(s) "
        + ("again: their tuned records measured faster than it" if again else
           "first (the baseline a tuned record must beat)"))
    start = time.time()
    schedules = {}
    for i in todo:
        sch = s_tir.Schedule(mods[i])
        packed.schedule_packed(sch, family)
        schedules[i] = sch
    built = builder.build([ms.builder.BuilderInput(schedules[i].mod, target) for i in todo])
    ran = [i for i, r in zip(todo, built) if r.error_msg is None]
    args = {i: ms.arg_info.ArgInfo.from_prim_func(mods[i]["main"]) for i in ran}
    futures = runner.run([ms.runner.RunnerInput(r.artifact_path, "cpu", args[i])
                          for i, r in zip(todo, built) if r.error_msg is None])
    runs = {i: (args[i], f) for i, f in zip(ran, futures)}
    for n, i in enumerate(todo, 1):
        if i not in runs:
            out(f"[tune] default {n}/{len(todo)} {tasks[i].task_name}: does not build")
            continue
        arg_info, future = runs[i]
        result = future.result()
        run_secs = [float(s) for s in (result.run_secs or [])] if result.error_msg is None else []
        record = ms.database.TuningRecord(schedules[i].trace, database.commit_workload(mods[i]),
                                          run_secs or [1e10], target, arg_info)
        database.commit_tuning_record(record)
        secs[i] = default_secs(workload_records(database, mods[i]))
        now = mean_secs(record)
        shown = f"{now * 1e3:.3f} ms" if now is not None else "does not run"
        out(f"[tune] default {n}/{len(todo)} {tasks[i].task_name}: {shown} x "
            f"{int(tasks[i].weight)} call(s)")
    out(f"[tune] defaults measured in {time.time() - start:.0f}s")
    return secs
