"""Tuning: MetaSchedule over the packed int8 kernels of one model, into a resumable database.

    tasks (packed kernels the family tensorizes: qcompile.compiler.tune extracts them)
      -> MetaSchedule (evolutionary search, XGBoost cost model, the family's design space)
      -> GatedDatabase (bit-exact check against the untuned kernel) -> JSON database in work_dir

Each task (kernel) gets an even share of `trials`.  A rerun with the same work_dir continues:
each task's records in the database count toward its share, only the tasks below their share
are tuned, and the search starts from the best records.  Every measured record is written as
it is committed, so an interrupted run loses nothing it measured.
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

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import QCompileError, TuningInterrupted
from ..schedules import resolve_family
from ..schedules.tuning import builder_worker_init, design_space, import_tvm_intrinsics
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


@derived_object
class _EndExhaustedTasks(ms.measure_callback.PyMeasureCallback):
    """Ends a task after its search comes back with no untried schedule (a small design space,
    or one the evolution has covered).  MetaSchedule's evolutionary search answers that with an
    empty batch and gives up only after five in a row, each a whole evolution (10-40 s per
    kernel on 2 cores), while the scheduler keeps picking the task: garden:resnet50 spent ten
    minutes so.  `ended` collects the scheduler's task ids."""

    def __init__(self, ended: set):
        super().__init__()
        self.ended = ended

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        if not measure_candidates and task_id not in self.ended:
            self.ended.add(task_id)
            task_scheduler.terminate_task(task_id)


def _trials_in(database, mod) -> tuple[int, float | None]:
    """(records, best seconds) the database holds for a workload."""
    if not database.has_workload(mod):
        return 0, None
    records = database.get_top_k(database.commit_workload(mod), 1 << 30)
    secs = [sum(map(float, r.run_secs)) / len(r.run_secs) for r in records if r.run_secs]
    valid = [s for s in secs if s < 1e9]
    return len(records), (min(valid) if valid else None)


def tune_tasks(tasks, family, work_dir: str, runner, remote=None, trials=200, threads=1,
               trials_per_iter=16, out=print, space=None, seed=0, trials_per_task=None,
               model_name: str = "model", numerics: str = "", target: str | None = None) -> dict:
    """Tune extracted tasks (MetaSchedule ExtractedTasks of the family's tunable kernels) into
    the database in `work_dir`; (runner, remote) from runner_for.  See qcompile.tune.  `space`
    overrides the family's design space (tests use it); `trials_per_task` (if given) sets
    `trials` to that many per task.  `model_name`, `numerics` and `target` (the name asked for)
    go into the report."""
    target_obj = family.tvm_target()
    os.makedirs(work_dir, exist_ok=True)
    if not tasks:
        amx = (f" (on {family.name} the dense kernels that fit AMX tiles have one schedule and "
               f"are not tuned; --target x86-avx512-vnni tunes their VNNI form)"
               if family.amx else "")
        raise QCompileError(f"the model has no packed int8 conv2d/dense kernel to tune{amx}")
    names = [t.task_name for t in tasks]
    # every task's share of the trials; a rerun tunes the tasks below their share (an
    # interrupted run's, or kernels that are new since: a global count would spend the rest
    # on whichever tasks the scheduler favours, records or not)
    share = trials_per_task or -(-trials // len(tasks))
    trials = share * len(tasks)
    inner = ms.database.JSONDatabase(os.path.join(work_dir, WORKLOADS),
                                     os.path.join(work_dir, RECORDS))
    done_before, best_before = zip(*(_trials_in(inner, t.dispatched[0]) for t in tasks))
    needs = [max(0, share - done) for done in done_before]
    todo = [i for i, need in enumerate(needs) if need]
    remaining = sum(needs)
    out(f"[tune] {len(tasks)} tasks ({few_names(names)}), {share} trials each; "
        f"{sum(done_before)} trials already in {work_dir}; {remaining} to run on the "
        f"{len(todo)} tasks below their share")
    gate = CorrectnessGate(target_obj, execute=remote)
    progress = Progress(names, [t.weight for t in tasks], remaining, work_dir,
                        trials_before=sum(done_before), out=out, tuned=todo)
    for i, best in enumerate(best_before):
        if best is not None:
            progress.seed_best(i, best)
    exhausted = set()  # the scheduler's ids (indices into todo) of tasks _EndExhaustedTasks ended
    if remaining:
        import_tvm_intrinsics()
        loggers = _task_loggers(work_dir, names)
        contexts = [
            ms.TuneContext(mod=t.dispatched[0], target=target_obj,
                           space_generator=space or design_space(family),
                           search_strategy=ms.search_strategy.EvolutionarySearch(),
                           task_name=t.task_name, logger=logger, rand_state=seed + i,
                           num_threads=threads).clone()
            for i, (t, logger) in enumerate(zip(tasks, loggers)) if i in todo]
        interrupts = {"interrupted": False}
        try:
            with _quiet_console(), _stop_on_ctrl_c(interrupts):
                ms.tune_tasks(
                    tasks=contexts, task_weights=[float(tasks[i].weight) for i in todo],
                    work_dir=work_dir, max_trials_global=remaining, max_trials_per_task=share,
                    num_trials_per_iter=trials_per_iter,
                    builder=_builder(family),
                    runner=runner,
                    database=GatedDatabase(inner, gate),
                    cost_model=ms.cost_model.XGBModel(
                        extractor=ms.feature_extractor.PerStoreFeature(), adaptive_training=True),
                    measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                       progress, _EndExhaustedTasks(exhausted),
                                       _StopWhenAsked(interrupts)],
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
    else:
        curve = draw_curve(work_dir, f"{model_name} on {family.name}")
    report = {
        "model": model_name, "target": target or family.name, "target_family": family.name,
        "target_dict": family.target(), "numerics": numerics, "work_dir": work_dir,
        "trials_requested": trials, "trials_before": sum(done_before),
        "trials_run": progress.done, "candidates_checked": gate.checked,
        "candidates_rejected": len(gate.rejected), "rejections": gate.rejected[:20],
        "tasks_exhausted": sorted(names[todo[i]] for i in exhausted),
        "estimated_model_ms": progress.estimate_ms(), "tuning_curve": curve,
        "tasks": [{"name": n, "calls": int(t.weight), "trials_before": d,
                   "best_ms": None if b is None else b * 1e3}
                  for n, t, d, b in zip(names, tasks, done_before, progress.best)],
        # the CPU the timings come from: this one, or a board's (not recorded)
        "cpu": _cpu_name(), "cpu_signature": None if remote is not None else cpu_signature(),
        "date": datetime.date.today().isoformat(),
    }
    with open(os.path.join(work_dir, PROVENANCE), "w") as f:
        json.dump(report, f, indent=1)
    out(f"[tune] done: {progress.done} trials run, {gate.checked} candidates checked, "
        f"{len(gate.rejected)} rejected by the correctness gate"
        + (f", {len(exhausted)} task(s) ended when the search found nothing new to try"
           if exhausted else "")
        + "; estimated kernel time "
        + (f"{report['estimated_model_ms']:.2f} ms" if report["estimated_model_ms"] else "-")
        + (f"; curve: {curve}" if curve else ""))
    return report


def _cpu_name() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()
