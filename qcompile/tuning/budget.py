"""Where a tuning run's trials go: each kernel's allotment, a time budget, early stops.

With a time budget (`qcompile tune --budget 30m`) the trials go where the time is: each kernel
is allotted trials in proportion to its share of the model's runtime (calls per run x its
default schedule's measured time), in whole batches; a kernel whose share rounds to no batch
keeps its default schedule untouched.  A kernel whose last STALL_BATCHES batches gained
less than STALL_GAIN ends early, its trials left to the others; the run stops after the first
batch that ends past the deadline.  Without a budget every kernel gets the same share.
"""

from __future__ import annotations

import re
import time

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import QCompileError
from .choice import measured_secs

# Seconds a trial costs on the 2-core machines, search, build and measurement together: tuning
# garden:googlenet ran 228 trials in 1135 s (Zen 4, 8 per batch), garden:resnet50 282 in 684 s
# (Zen 5).  Only the allotment uses it; the deadline is what ends a budgeted run.
SECONDS_PER_TRIAL = 4.0
STALL_BATCHES = 3
STALL_GAIN = 0.01
EXHAUSTED = "the search found no untried schedule"


def parse_budget(text: str) -> float:
    """'30m', '1h', '90s', '1h30m' or a number of minutes -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise QCompileError(f"--budget {text!r}: write it as 30m, 1h, 90s or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def allot(runtime: list[float | None], total_trials: int, per_iter: int) -> list[int]:
    """Trials per kernel in proportion to its runtime (None: not measured, none), in whole
    batches of `per_iter`: each kernel its whole batches, the batches left over to the largest
    remainders; a kernel whose share rounds to no batch gets none."""
    known = sum(r for r in runtime if r)
    if not known:
        return [0] * len(runtime)
    ideal = [total_trials // per_iter * (r or 0) / known for r in runtime]
    batches = [int(x) for x in ideal]
    left = total_trials // per_iter - sum(batches)
    for i in sorted(range(len(ideal)), key=lambda i: ideal[i] - batches[i], reverse=True)[:left]:
        if ideal[i] > 0:
            batches[i] += 1
    return [b * per_iter for b in batches]


def trials_for(seconds: float) -> int:
    """How many trials a budget of `seconds` pays for (SECONDS_PER_TRIAL)."""
    return int(seconds / SECONDS_PER_TRIAL)


class Plan:
    """When each task's search ends: at its allotment of trials, once it stopped gaining
    (`stall`), or at the `deadline` (time.time() seconds).  Read by each task's Allotted
    search strategy; `progress` (tuning.progress.Progress) prints a task's closing line."""

    def __init__(self, needs: dict, progress, deadline=None, stall: bool = False):
        self.needs, self.progress = dict(needs), progress
        self.deadline, self.stall = deadline, stall
        self.trials = {i: 0 for i in needs}
        self.history = {i: [] for i in needs}   # the task's best seconds after each batch
        self.ended = {}                         # task index -> why
        self.deadline_passed = False

    def measured(self, i: int, results) -> None:
        """A batch of task `i` came back from the runner."""
        self.trials[i] += len(results)
        secs = [measured_secs(r.run_secs, r.error_msg) for r in results] + self.history[i][-1:]
        self.history[i].append(min((s for s in secs if s is not None), default=None))

    def _stalled(self, i: int) -> bool:
        h = self.history[i]
        if not self.stall or len(h) <= STALL_BATCHES or h[-1] is None:
            return False
        before = h[-1 - STALL_BATCHES]
        return before is not None and h[-1] > before * (1.0 - STALL_GAIN)

    def ends(self, i: int) -> bool:
        """True once task `i` is to be searched no more (its closing line printed once)."""
        if i in self.ended:
            return True
        why = None
        if self.deadline is not None and time.time() > self.deadline:
            self.deadline_passed, why = True, "budget spent"
        elif self.trials[i] >= self.needs[i]:
            why = "its share done"
        elif self._stalled(i):
            why = f"no gain over its last {STALL_BATCHES} batches"
        if why is None:
            return False
        self.end(i, why)
        return True

    def end(self, i: int, why: str) -> None:
        """Task `i` is searched no more, for the reason `why` (its closing line)."""
        self.ended[i] = why
        self.progress.task_done(i, self.trials[i], why)


@derived_object
class Allotted(ms.search_strategy.PySearchStrategy):
    """A task's search strategy (`inner`, MetaSchedule's) that gives up when the Plan says so:
    MetaSchedule then ends the task itself (a measure callback ending it would have it ended
    twice when its last batch is joined at the end of the run)."""

    def __init__(self, inner, index: int, plan: Plan):
        super().__init__()
        self.inner, self.index, self.plan = inner, index, plan

    def _initialize_with_tune_context(self, context) -> None:
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None,
                   cost_model=None) -> None:
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database,
                              cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self):
        if self.plan.ends(self.index):
            return None
        candidates = self.inner.generate_measure_candidates()
        if candidates is not None and len(candidates) == 0:
            # MetaSchedule's evolutionary search answers a task with nothing untried by an
            # empty batch and gives up only after five, each a whole evolution (10-40 s per
            # kernel on 2 cores) while the scheduler keeps picking the task: garden:resnet50
            # spent ten minutes so
            self.plan.end(self.index, EXHAUSTED)
            return None
        return candidates

    def notify_runner_results(self, measure_candidates, results) -> None:
        self.plan.measured(self.index, results)
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self):
        return Allotted(self.inner.clone(), self.index, self.plan)
