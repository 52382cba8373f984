"""The correctness gate: no tuned kernel enters a database before it matches the reference.

MetaSchedule measures speed only, and a wrongly tensorized kernel is usually the fastest one
(TVM accepts a 16x4 tile that is not contiguous and computes garbage).  `GatedDatabase` wraps a
MetaSchedule database: every record committed to it is first rebuilt from its trace, run on
seeded random inputs and compared bit for bit with the untuned PrimFunc (the definition);
a mismatch is counted and dropped.  Records of failed measurements pass through unchecked
(they carry a huge run time and are never chosen).
"""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm.ir.utils import derived_object

from .choice import FAILED_SECS



def random_arguments(func: tvm.tirx.PrimFunc, seed: int = 0) -> list[np.ndarray]:
    """Seeded inputs for every parameter: full-range 8-bit data, float scales that keep the
    requantized outputs away from saturation, small int32 terms."""
    rng = np.random.default_rng(seed)
    args = []
    for param in func.params:
        buf = param.ty
        shape, dtype = [int(s) for s in buf.shape], str(buf.dtype)
        if dtype.startswith("float"):
            args.append(rng.uniform(1e-4, 1e-3, shape).astype(dtype))
        elif dtype == "int32":
            args.append(rng.integers(-1000, 1000, shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            args.append(rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype))
    return args


def _as_module(func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def run_primfunc(func: tvm.tirx.PrimFunc, target, args: list[np.ndarray]) -> list[np.ndarray]:
    """Build `func` for the (host) target, run it on copies of `args`, return all buffers."""
    lib = tvm.compile(_as_module(func), target=target)
    tensors = [tvm.runtime.tensor(a.copy()) for a in args]
    lib(*tensors)
    return [t.numpy() for t in tensors]


class RemoteExecutor:
    """Runs candidates where they are measured: on a device registered with an RPC tracker
    (the board a cross-compiled family is tuned for).  A session per check, released at once:
    MetaSchedule's runner needs the same device between checks."""

    def __init__(self, host: str, port: int, key: str, family):
        self.host, self.port, self.key, self.family = host, port, key, family

    def __call__(self, func: tvm.tirx.PrimFunc, args: list[np.ndarray]) -> list[np.ndarray]:
        import tempfile

        from tvm import rpc

        lib = tvm.compile(_as_module(func), target=self.family.tvm_target())
        session = rpc.connect_tracker(self.host, self.port).request(self.key, session_timeout=300)
        with tempfile.TemporaryDirectory() as tmp:
            session.upload(self.family.export_library(lib, f"{tmp}/gate_candidate.so"))
        remote = session.load_module("gate_candidate.so")
        dev = session.cpu()
        tensors = [tvm.runtime.tensor(a.copy(), dev) for a in args]
        remote["main"](*tensors)
        return [t.numpy() for t in tensors]


class CorrectnessGate:
    """Checks scheduled PrimFuncs against their unscheduled workload, bit for bit.

    The reference runs here (built for `target`, or for this machine when `execute` runs the
    candidates elsewhere: integer kernels give the same bits on any CPU); the candidates run
    through `execute(func, args)` (default: built for `target` and run here)."""

    def __init__(self, target, execute=None):
        self.target = target
        self.execute = execute
        self._reference_target = target if execute is None else tvm.target.Target("llvm")
        self._reference = {}   # structural hash of the workload -> (args, outputs)
        self.checked = 0
        self.rejected = []     # (task name or hash, reason)

    def _reference_for(self, workload: tvm.IRModule):
        key = tvm_ffi.structural_hash(workload)
        if key not in self._reference:
            func = workload["main"]
            args = random_arguments(func)
            self._reference[key] = (args, run_primfunc(func, self._reference_target, args))
        return self._reference[key]

    def check(self, workload: tvm.IRModule, scheduled: tvm.IRModule) -> str | None:
        """None if `scheduled` computes what `workload` does on the gate's inputs, else why not."""
        args, expected = self._reference_for(workload)
        self.checked += 1
        try:
            if self.execute is not None:
                got = self.execute(scheduled["main"], args)
            else:
                got = run_primfunc(scheduled["main"], self.target, args)
        except Exception as err:  # noqa: BLE001 - a candidate that does not build is rejected
            return f"does not build/run: {str(err).splitlines()[-1][:200]}"
        for i, (e, g) in enumerate(zip(expected, got)):
            if not np.array_equal(e, g):
                bad = int(np.count_nonzero(e != g))
                return f"buffer {i}: {bad} of {e.size} elements differ from the reference"
        return None

    def check_record(self, record: ms.database.TuningRecord) -> str | None:
        workload = record.workload.mod
        sch = s_tir.Schedule(workload)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        return self.check(workload, sch.mod)


@derived_object
class GatedDatabase(ms.database.PyDatabase):
    """A MetaSchedule database that admits a tuning record only after the gate passed it."""

    def __init__(self, inner: ms.database.Database, gate: CorrectnessGate):
        super().__init__()
        self.inner = inner
        self.gate = gate

    def has_workload(self, mod):
        return self.inner.has_workload(mod)

    def commit_workload(self, mod):
        return self.inner.commit_workload(mod)

    def commit_tuning_record(self, record):
        secs = [float(s) for s in (record.run_secs or [])]
        if secs and min(secs) < FAILED_SECS:
            why = self.gate.check_record(record)
            if why is not None:
                self.gate.rejected.append(why)
                return
        self.inner.commit_tuning_record(record)

    def get_top_k(self, workload, top_k):
        return self.inner.get_top_k(workload, top_k)

    def get_all_tuning_records(self):
        return self.inner.get_all_tuning_records()

    def query_tuning_record(self, mod, target, workload_name=None):
        return self.inner.query_tuning_record(mod, target, workload_name)

    def query_schedule(self, mod, target, workload_name=None):
        return self.inner.query_schedule(mod, target, workload_name)

    def query_ir_module(self, mod, target, workload_name=None):
        return self.inner.query_ir_module(mod, target, workload_name)

    def __len__(self):
        return len(self.inner)
