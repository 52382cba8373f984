"""Tuning: MetaSchedule over the packed int8 kernels of one model, into a resumable database.

    tasks (packed kernels the family tensorizes: qcompile.compiler.tune extracts them)
      -> each one's default schedule measured first (tuning.defaults), a record of its own
      -> MetaSchedule (evolutionary search, XGBoost cost model, the family's design space)
      -> GatedDatabase (bit-exact check against the untuned kernel) -> JSON database in work_dir

Each task (kernel) gets an even share of `trials`, or with a time budget trials by its share
of the model's runtime (tuning.budget).  A rerun with the same work_dir continues: each task's
tuned records count toward its share, only the tasks below their share are tuned, and the
search starts from the best records.  Every measured record is written as it is committed,
so an interrupted run loses nothing it measured.  compile() later uses a tuned record only
where it measured faster than the default beside it (tuning.choice).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import json
import logging
import os
import platform
import signal
import tempfile
import time

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

from ..errors import QCompileError, TuningInterrupted
from ..schedules import resolve_family
from ..schedules.tuning import builder_worker_init, design_space, import_tvm_intrinsics
from . import budget, choice
from .choice import is_default, mean_secs, workload_records
from .defaults import measure_defaults
from .gate import CorrectnessGate, GatedDatabase, RemoteExecutor
from .logs import PROVENANCE, RECORDS, WORKLOADS, cpu_signature, cpuinfo, few_names
from .progress import Progress, draw_curve

BUILD_TIMEOUT_S = 120   # MetaSchedule's 30 s default is too short for int8 convs on 2 cores
RUN_TIMEOUT_S = 60
RUN_REPEATS = 10  # timed calls per candidate, each after a cache flush


def runner_for(family, rpc_tracker: str | None = None, rpc_key: str | None = None):
    """(MetaSchedule's runner, the gate's executor or None): here, or on the devices of an RPC
    tracker.  Raises QCompileError for options that cannot work, before any extraction."""
    if family.dot_intrinsic is None:
        raise QCompileError(f"target family {family.name} has no tensorized kernels to tune")
    # each timed call with the caches flushed of everything but the input (TVM's
    # cache_flush_cpu_non_first_arg): in a model a kernel's weights come from memory, its input
    # from the kernel before it.  Timed hot, over and over, garden:resnet50's 14x14 3x3 conv
    # (6 calls) won with tiles that ran 0.68 -> 0.97 ms in the model; timed so, 0.66 -> 0.69.
    config = ms.runner.EvaluatorConfig(number=1, repeat=RUN_REPEATS, min_repeat_ms=0,
                                       enable_cpu_cache_flush=True)
    if rpc_tracker is None:
        if family.is_cross():
            raise QCompileError(
                f"tuning for {family.name} measures on the board: pass --rpc-tracker HOST:PORT "
                f"--rpc-key KEY (docs/targets.md, 'Tuning for a board'); emulated timings mean "
                "nothing")
        return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=config), None
    if not rpc_key:
        raise QCompileError("--rpc-tracker needs --rpc-key (the key the devices registered with)")
    host, _, port = rpc_tracker.rpartition(":")
    if not host or not port.isdigit():
        raise QCompileError(f"--rpc-tracker must be HOST:PORT, got {rpc_tracker!r}")
    rpc = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=rpc_key,
                              session_timeout_sec=RUN_TIMEOUT_S * 4)
    return (ms.runner.RPCRunner(rpc, evaluator_config=config, max_workers=1),
            RemoteExecutor(host, int(port), rpc_key, family))


def _builder(family):
    """LocalBuilder: a shared library for the family's machine (cross-linked for aarch64)."""
    export = functools.partial(export_candidate, family.name) if family.is_cross() else None
    return ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S, initializer=builder_worker_init,
                                   f_export=export)


def export_candidate(family_name: str, lib) -> str:
    """MetaSchedule export function (runs in the builder workers): a cross-linked .so."""
    return resolve_family(family_name).export_library(
        lib, os.path.join(tempfile.mkdtemp(), "candidate.so"))


def _task_loggers(work_dir: str, names: list[str]):
    """ms.logging.get_loggers_from_work_dir, tolerating handlers MetaSchedule did not create on
    its global logger: it re-lists them by name in a logging.dictConfig, and an unnamed one (such
    as the capture handler pytest >= 9 attaches to every non-propagating logger, which that logger
    is after a first tune) makes it fail with "'NoneType' object has no attribute 'format'".
    They are set aside while it runs, then put back."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    foreign = [h for h in logger.handlers if not (h.get_name() or "").startswith(logger.name)]
    for h in foreign:
        logger.removeHandler(h)
    try:
        return ms.logging.get_loggers_from_work_dir(work_dir, names)
    finally:
        for h in foreign:
            logger.addHandler(h)


@contextlib.contextmanager
def _quiet_console():
    """MetaSchedule logs every batch and a statistics table to the console; the per-task logs
    in work_dir/logs keep all of it, our progress line is what the console shows."""
    handlers = [h for h in logging.getLogger("tvm.s_tir.meta_schedule").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels):
            h.setLevel(level)


@contextlib.contextmanager
def _stop_on_ctrl_c(state: dict):
    """The first Ctrl-C asks the run to stop after the next measured batch (its records go to
    the database first; other tasks' candidates still in flight are dropped); a second one
    ends the process at once (the system's default action: every committed record is already
    in the database file, so nothing measured is lost).  A Python handler only runs when
    MetaSchedule's C++ calls back into Python, which can take minutes; raising from it ends in
    std::terminate (a second Ctrl-C raising KeyboardInterrupt did: a segfault and a C++ stack
    dump), and TVM's FFI turns a KeyboardInterrupt raised in one of its Python callbacks into a
    bare RuntimeError: hence the flag, checked by _StopWhenAsked after each batch.  Sets
    state["interrupted"]."""

    def handler(_signum, _frame):
        state["interrupted"] = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.write(2, b"\n[tune] Ctrl-C: stopping when the next measured batch is saved (in the "
                    b"first round, minutes: every task is searched first); Ctrl-C again stops "
                    b"at once, keeping every record saved so far\n")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _StopRequested(Exception):
    pass


@derived_object
class _StopWhenAsked(ms.measure_callback.PyMeasureCallback):
    """Ends the run after a measured batch (records committed) once Ctrl-C asked for it."""

    def __init__(self, state: dict):
        super().__init__()
        self.state = state

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        if self.state["interrupted"]:
            raise _StopRequested()


def _trials_in(database, mod) -> tuple[int, float | None]:
    """(tuned records, best seconds of any record) the database holds for a workload: the
    default schedule's record (tuning.defaults) is not a trial."""
    records = workload_records(database, mod)
    secs = [s for s in map(mean_secs, records) if s is not None]
    return sum(not is_default(r) for r in records), (min(secs) if secs else None)


def _allotments(tasks, defaults, done_before, trials, trials_per_task, trials_per_iter,
                budget_s):
    """(trials each task still needs, the announcement): an even share of `trials` (or
    `trials_per_task`), or with a budget trials by runtime share (tuning.budget)."""
    names = few_names([t.task_name for t in tasks])
    if budget_s is None:
        share = trials_per_task or -(-trials // len(tasks))
        needs = [max(0, share - done) for done in done_before]
        return needs, (f"{len(tasks)} tasks ({names}), {share} trials each; "
                       f"{sum(done_before)} trials already in the work dir")
    runtime = [t.weight * d if d is not None else None for t, d in zip(tasks, defaults)]
    total = budget.trials_for(budget_s)
    allotted = budget.allot(runtime, total, trials_per_iter)
    needs = [max(0, a - done) for a, done in zip(allotted, done_before)]
    covered = sum(r for r, a in zip(runtime, allotted) if a and r)
    whole = sum(r for r in runtime if r) or 1.0
    return needs, (f"{len(tasks)} tasks ({names}); budget {budget_s / 60:.0f} min, about "
                   f"{total} trials, by runtime share, to the {sum(1 for a in allotted if a)} "
                   f"kernels that make {covered / whole:.0%} of the modelled time (the others "
                   f"keep their default schedule); {sum(done_before)} trials already in the "
                   "work dir")


def tune_tasks(tasks, family, work_dir: str, runner, remote=None, trials=200, threads=1,
               trials_per_iter=16, out=print, space=None, seed=0, trials_per_task=None,
               model_name: str = "model", numerics: str = "", target: str | None = None,
               budget_s: float | None = None) -> dict:
    """Tune extracted tasks (MetaSchedule ExtractedTasks of the family's tunable kernels) into
    the database in `work_dir`; (runner, remote) from runner_for.  See qcompile.tune.  Each
    task's default schedule is measured first (tuning.defaults).  `space` overrides the
    family's design space (tests use it); `trials_per_task` (if given) sets `trials` to that
    many per task; `budget_s` (seconds) replaces both: trials by runtime share until the
    deadline (tuning.budget).  `model_name`, `numerics` and `target` (the name asked for) go
    into the report."""
    target_obj = family.tvm_target()
    os.makedirs(work_dir, exist_ok=True)
    if not tasks:
        amx = (f" (on {family.name} the dense kernels that fit AMX tiles have one schedule and "
               f"are not tuned; --target x86-avx512-vnni tunes their VNNI form)"
               if family.amx else "")
        raise QCompileError(f"the model has no packed int8 conv2d/dense kernel to tune{amx}")
    names = [t.task_name for t in tasks]
    inner = ms.database.JSONDatabase(os.path.join(work_dir, WORKLOADS),
                                     os.path.join(work_dir, RECORDS))
    builder = _builder(family)
    start = time.time()
    defaults = measure_defaults(tasks, family, inner, builder, runner, out)
    mods = [_normalize_mod(t.dispatched[0]) for t in tasks]
    done_before, best_before = zip(*(_trials_in(inner, mod) for mod in mods))
    deadline = None if budget_s is None else start + budget_s
    # every task's share of the trials; a rerun tunes the tasks below their share (an
    # interrupted run's, or kernels that are new since: a global count would spend the rest
    # on whichever tasks the scheduler favours, records or not)
    needs, announce = _allotments(tasks, defaults, done_before, trials, trials_per_task,
                                  trials_per_iter, budget_s)
    todo = [i for i, need in enumerate(needs) if need]
    remaining = sum(needs)
    out(f"[tune] {announce}; {remaining} to run on the {len(todo)} tasks below their share")
    gate = CorrectnessGate(target_obj, execute=remote)
    progress = Progress(names, [t.weight for t in tasks], remaining, work_dir,
                        trials_before=sum(done_before), out=out, tuned=todo, deadline=deadline)
    for i, (best, default) in enumerate(zip(best_before, defaults)):
        if best is not None:
            progress.seed_best(i, best)
        progress.seed_default(i, default)
    progress.start_curve()
    plan = budget.Plan({i: needs[i] for i in todo}, progress, deadline=deadline,
                       stall=budget_s is not None)
    interrupts = {"interrupted": False}
    if remaining:
        import_tvm_intrinsics()
        loggers = _task_loggers(work_dir, names)
        contexts = [
            ms.TuneContext(mod=t.dispatched[0], target=target_obj,
                           space_generator=space or design_space(family),
                           search_strategy=budget.Allotted(
                               ms.search_strategy.EvolutionarySearch(), i, plan),
                           task_name=t.task_name, logger=logger, rand_state=seed + i,
                           num_threads=threads).clone()
            for i, (t, logger) in enumerate(zip(tasks, loggers)) if i in todo]
        try:
            with _quiet_console(), _stop_on_ctrl_c(interrupts):
                ms.tune_tasks(
                    tasks=contexts, task_weights=[float(tasks[i].weight) for i in todo],
                    work_dir=work_dir, max_trials_global=remaining,
                    # the plan ends each task at its own need; MetaSchedule's cap is a bound
                    max_trials_per_task=max(needs) + trials_per_iter,
                    num_trials_per_iter=trials_per_iter,
                    builder=builder,
                    runner=runner,
                    database=GatedDatabase(inner, gate),
                    cost_model=ms.cost_model.XGBModel(
                        extractor=ms.feature_extractor.PerStoreFeature(), adaptive_training=True),
                    measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                       progress, _StopWhenAsked(interrupts)],
                    task_scheduler="gradient")
        except (KeyboardInterrupt, RuntimeError) as err:
            if isinstance(err, RuntimeError) and not interrupts["interrupted"]:
                raise
            # raised below, out of this block: the traceback would keep MetaSchedule's
            # builder pool alive until exit, where its threads fail to join
            interrupts["interrupted"] = True
        finally:
            curve = draw_curve(work_dir, f"{model_name} on {family.name}")
        if interrupts["interrupted"] and progress.done < remaining:
            gc.collect()
            raise TuningInterrupted(
                f"tuning interrupted after {progress.done} of {remaining} trials; every "
                f"measured record is kept in {work_dir} ({len(inner)} in all); the same "
                "command continues from them")
        for i in todo:
            if i not in plan.ended:
                progress.task_done(i, plan.trials[i], "done")
    else:
        curve = draw_curve(work_dir, f"{model_name} on {family.name}")
    _remeasure_winners(tasks, family, inner, builder, runner, progress, out)
    estimate, baseline = progress.estimate_ms(), progress.estimate_ms(progress.default)
    report = {
        "model": model_name, "target": target or family.name, "target_family": family.name,
        "target_dict": family.target(), "numerics": numerics, "work_dir": work_dir,
        "trials_requested": remaining + sum(done_before), "budget_s": budget_s,
        "budget_spent": plan.deadline_passed, "seconds": round(time.time() - start, 1),
        "trials_before": sum(done_before),
        "trials_run": progress.done, "candidates_checked": gate.checked,
        "candidates_rejected": len(gate.rejected), "rejections": gate.rejected[:20],
        "tasks_exhausted": sorted(names[i] for i, why in plan.ended.items()
                                  if why == budget.EXHAUSTED),
        "estimated_model_ms": estimate, "default_model_ms": baseline,
        "tuning_curve": curve,
        "tasks": [{"name": n, "calls": int(t.weight), "trials_before": d,
                   "trials_run": plan.trials.get(i, 0),
                   "default_ms": None if f is None else f * 1e3,
                   "best_ms": None if b is None else b * 1e3,
                   "gain": progress.gain(i)}
                  for i, (n, t, d, f, b) in enumerate(zip(names, tasks, done_before,
                                                          progress.default, progress.best))],
        # the CPU the timings come from: this one, or a board's (not recorded)
        "cpu": _cpu_name(), "cpu_signature": None if remote is not None else cpu_signature(),
        "date": datetime.date.today().isoformat(),
    }
    _write_provenance(work_dir, report)
    gain = f" ({baseline / estimate:.2f}x the default schedules' {baseline:.2f} ms)" if (
        estimate and baseline) else ""
    out(f"[tune] done: {progress.done} trials run, {gate.checked} candidates checked, "
        f"{len(gate.rejected)} rejected by the correctness gate"
        + (f", {len(report['tasks_exhausted'])} task(s) ended when the search found nothing "
           "new to try" if report["tasks_exhausted"] else "")
        + "; estimated kernel time "
        + (f"{estimate:.2f} ms{gain}" if estimate else "-")
        + (f"; curve: {curve}" if curve else ""))
    return report


def _remeasure_winners(tasks, family, database, builder, runner, progress, out) -> None:
    """Measure the default again where a tuned record won by choice.MIN_GAIN: compile keeps the
    default unless the tuned record beats the best of its measurements."""
    won = [i for i in range(len(tasks))
           if (progress.gain(i) or 0.0) >= 1.0 / (1.0 - choice.MIN_GAIN)]
    if not won:
        return
    again = measure_defaults(tasks, family, database, builder, runner, out, again=won)
    for i in won:
        progress.seed_default(i, again[i])


def _write_provenance(work_dir: str, report: dict) -> None:
    """provenance.json: this run's report, the work dir's earlier ones under "earlier"."""
    path = os.path.join(work_dir, PROVENANCE)
    try:
        with open(path) as f:
            last = json.load(f)
        report = {**report, "earlier": [*last.pop("earlier", []), last]}
    except (OSError, ValueError):
        pass
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


def _cpu_name() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()
