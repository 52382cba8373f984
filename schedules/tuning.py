"""MetaSchedule design spaces: which kernels are tuned, and over what.

A packed int8 kernel (schedules.packed.SCHEDULES: convs, pixel-lane convs, dense) is tuned
over the decisions its tensorized default schedule fixes (schedules.packed with search=True):
the tile sizes, sampled with `sample_perfect_tile` and mutated by MetaSchedule's tile-size
mutator; for a channel-lane conv which loop runs in parallel (rows, with each row's input
packed in the iteration, or channel blocks x rows, packed before) and whether the kernel's
column taps are unrolled; for a pixel-row conv whether its row taps are unrolled too (those
yes/no decisions with `sample_categorical`, the default twice as likely).  The XGBoost cost
model ranks the candidates.  The default schedule is measured before the search, as
a record of its own (qcompile.tuning.defaults): a tuned record is used only where it measured
faster than it (qcompile.tuning.choice), and the search starts from it.  Every
candidate keeps the packed layout and the family's intrinsic, so tensorization stays correct
by construction (and the tuner's correctness gate checks it anyway).
Other kernels (elementwise, pooling) keep the default schedule: they are not tuning tasks;
neither are dense kernels on AMX tiles (schedules.amx).
"""

from __future__ import annotations

import inspect
import sys

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from . import amx, packed


def is_tunable(func: tvm.tirx.PrimFunc, family) -> bool:
    """True when `func` holds a packed kernel the family tensorizes (not on AMX tiles: those
    have one schedule, schedules.amx)."""
    if family.dot_intrinsic is None:
        return False
    sch = s_tir.Schedule(func)
    return packed.packed_kind(sch) is not None and not (family.amx and amx.fits(sch))


def _template(family):
    def apply(sch: s_tir.Schedule):
        packed.schedule_packed(sch, family, search=True)
        return [sch]

    return apply


def design_space(family) -> ms.space_generator.SpaceGenerator:
    """The family's MetaSchedule space for packed kernels: our template, tiles searched."""
    return ms.space_generator.ScheduleFn(
        _template(family), sch_rules=[], postprocs=[],
        mutator_probs={ms.mutator.MutateTileSize(): 1.0})


def import_tvm_intrinsics() -> None:
    """Import TVM's shipped tensor intrinsics (MetaSchedule does on first use) in 5 s, not 28.

    `tvm.s_tir.tensor_intrin` parses a few hundred TVMScript functions; for each statement the
    parser's diagnostics call inspect.getmodule(frame, filename), which walks all of
    sys.modules every time (25,000 walks).  The answer depends on the filename only, so it is
    memoized for the duration of the import; inspect is restored afterwards."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    original = inspect.getmodule
    by_file = {}

    def getmodule(obj, _filename=None):
        if _filename is None or hasattr(obj, "__module__"):
            return original(obj, _filename)
        if _filename not in by_file:
            by_file[_filename] = original(obj, _filename)
        return by_file[_filename]

    inspect.getmodule = getmodule
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.getmodule = original


def builder_worker_init() -> None:
    """Initializer of MetaSchedule's builder processes (each imports the intrinsics too)."""
    import_tvm_intrinsics()
    # every family's intrinsics, registered when its module is imported
    from . import targets  # noqa: F401
