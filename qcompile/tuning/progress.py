"""Progress of a tuning run: one line per measured batch, and the tuning curve.

The estimated model latency is the sum over tasks of (calls per model run) x (best measured
latency of that kernel, its default schedule included: tuning.defaults measures it first); it
exists once every task has a measurement.  The curve (estimated latency against trials,
across resumed runs) starts at the default schedules' estimate; it is saved as
tuning_curve.json and drawn as tuning_curve.png in the work dir, the defaults' latency as a
dashed line.
"""

from __future__ import annotations

import json
import os
import time

from tvm.s_tir import meta_schedule as ms
from tvm.ir.utils import derived_object

from .choice import measured_secs

CURVE_JSON = "tuning_curve.json"
CURVE_PNG = "tuning_curve.png"


@derived_object
class Progress(ms.measure_callback.PyMeasureCallback):
    """Prints trials done / total, each task's best latency, the model estimate and an ETA."""

    def __init__(self, task_names, weights, trials_total, work_dir, trials_before=0, out=print,
                 tuned=None, deadline=None):
        super().__init__()
        self.deadline = deadline  # time.time() at which a budgeted run stops
        self.names, self.weights = list(task_names), list(weights)
        # the scheduler's task ids index the tasks being tuned: `tuned`, a subset of them all
        self.tuned = list(range(len(self.names))) if tuned is None else list(tuned)
        self.best = [None] * len(self.names)
        self.default = [None] * len(self.names)
        self.trials_total, self.trials_before = trials_total, trials_before
        self.done = 0
        self.work_dir, self.out = work_dir, out
        self.start = time.time()
        self.curve = _load_curve(work_dir)

    def seed_best(self, task_id: int, seconds: float) -> None:
        """Best latency already in the database (a resumed run)."""
        self.best[task_id] = seconds

    def seed_default(self, task_id: int, seconds: float | None) -> None:
        """The task's default schedule, measured (tuning.defaults); also a best so far."""
        if seconds is not None and self.default[task_id] is not None:
            seconds = min(seconds, self.default[task_id])
        self.default[task_id] = seconds
        if seconds is not None and (self.best[task_id] is None or seconds < self.best[task_id]):
            self.best[task_id] = seconds

    def start_curve(self) -> None:
        """The curve's first point: the default schedules' estimate (a new work dir)."""
        est = self.estimate_ms(self.default)
        if not self.curve and est is not None:
            self.curve.append([self.trials_before, est])
            _save_curve(self.work_dir, self.curve)

    def estimate_ms(self, times=None):
        """Modelled latency in ms from per-task `times` (default: the best ones)."""
        times = self.best if times is None else times
        if any(b is None for b in times):
            return None
        return sum(w * b for w, b in zip(self.weights, times)) * 1e3

    def gain(self, task_id: int) -> float | None:
        """Default time / best time of a task (None without both)."""
        d, b = self.default[task_id], self.best[task_id]
        return None if d is None or b is None else d / b

    def task_done(self, task_id: int, trials: int, why: str) -> None:
        """A task's closing line: default vs best and the gain."""
        d, b, g = self.default[task_id], self.best[task_id], self.gain(task_id)
        self.out(f"[tune] finished task {task_id + 1}/{len(self.names)} "
                 f"{self.names[task_id]} ({why}, {trials} trials): default "
                 + (f"{d * 1e3:.3f} ms" if d is not None else "-") + " -> best "
                 + (f"{b * 1e3:.3f} ms" if b is not None else "-")
                 + (f", {g:.2f}x" if g is not None else ""))

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        task_id = self.tuned[task_id]
        if not measure_candidates:
            return
        self.done += len(measure_candidates)
        for result in runner_results:
            mean = measured_secs(result.run_secs, result.error_msg)
            if mean is not None and (self.best[task_id] is None or mean < self.best[task_id]):
                self.best[task_id] = mean
        est = self.estimate_ms()
        trials = self.trials_before + self.done
        if est is not None:
            self.curve.append([trials, est])
            _save_curve(self.work_dir, self.curve)
        elapsed = time.time() - self.start
        eta = elapsed / self.done * max(0, self.trials_total - self.done)
        if self.deadline is not None:
            eta = min(eta, max(0.0, self.deadline - time.time()))
        best = self.best[task_id]
        self.out(f"[tune] {_bar(elapsed / max(elapsed + eta, 1e-9))} "
                 f"{self.done}/{self.trials_total} trials | task {task_id + 1}/"
                 f"{len(self.names)} {self.names[task_id]}: best "
                 + (f"{best * 1e3:.3f} ms" if best is not None else "-")
                 + " | model est " + (f"{est:.2f} ms" if est is not None else "-")
                 + f" | {elapsed:.0f}s elapsed, ETA {eta:.0f}s")


def _bar(fraction: float, width: int = 20) -> str:
    """[#####---------------] for a fraction done."""
    filled = max(0, min(width, round(fraction * width)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _load_curve(work_dir):
    path = os.path.join(work_dir, CURVE_JSON)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return []


def _save_curve(work_dir, curve):
    with open(os.path.join(work_dir, CURVE_JSON), "w") as f:
        json.dump(curve, f)


def draw_curve(work_dir: str, title: str) -> str | None:
    """tuning_curve.png from tuning_curve.json; returns its path (None without points)."""
    curve = _load_curve(work_dir)
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials, est = zip(*curve)
    best = [min(est[: i + 1]) for i in range(len(est))]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(trials, best, marker="o", markersize=3, label="best so far")
    ax.axhline(est[0], linestyle="--", color="grey", label="default schedules")
    ax.legend(loc="upper right")
    ax.set_xlabel("trials")
    ax.set_ylabel("estimated model latency (ms)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = os.path.join(work_dir, CURVE_PNG)
    fig.savefig(path)
    plt.close(fig)
    return path
