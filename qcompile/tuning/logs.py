"""Tuning databases on disk: the shipped `tune_logs/` and work dirs of `qcompile tune`.

Layout: a database is a directory holding MetaSchedule's database_workload.json and
database_tuning_record.json (plus provenance.json).  Shipped logs live under
tune_logs/<target family>/<model>/; compile() applies every database of its family by default.
A line that does not parse is skipped with a warning; the rest of the log is used.

Kernels are looked up as MetaSchedule does (structural equality), then, for the ones not
found, up to their quantization constants (`kernel_shape_key`): a requantize or residual-add
scale or zero point is a literal in the kernel, and it moves when the same model is
calibrated on another CPU (fp32 conv results differ in their last bits), while the tuned
schedule does not depend on it.  Which record a kernel then takes: `tuning.choice`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import warnings

import tvm
from tvm.s_tir import meta_schedule as ms

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
PROVENANCE = "provenance.json"


def shipped_root() -> str:
    """The tune_logs/ directory (next to the package in a checkout, or installed with it)."""
    env = os.environ.get("QCOMPILE_TUNE_LOGS")
    if env:
        return env
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(here, "tune_logs")


def database_dirs(root: str) -> list[str]:
    """Every directory under `root` (itself included) that holds a tuning database."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if WORKLOADS in files and RECORDS in files:
            found.append(dirpath)
    return sorted(found)


def _clean_copy(path: str) -> str:
    """`path`, or a copy without the lines that are not valid JSON (each one warned about)."""
    good, bad = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
                good.append(line if line.endswith("\n") else line + "\n")
            except json.JSONDecodeError:
                bad.append(number)
    if not bad:
        return path
    warnings.warn(f"{path}: skipped {len(bad)} corrupt line(s) (line {', '.join(map(str, bad[:5]))}"
                  f"{', ...' if len(bad) > 5 else ''}); the other {len(good)} are used",
                  stacklevel=3)
    copy = os.path.join(tempfile.mkdtemp(prefix="qcompile-db-"), os.path.basename(path))
    with open(copy, "w") as f:
        f.writelines(good)
    return copy


def open_database(directory: str) -> ms.database.Database:
    """One database directory as a JSONDatabase (corrupt lines skipped with a warning)."""
    workloads = _clean_copy(os.path.join(directory, WORKLOADS))
    records = _clean_copy(os.path.join(directory, RECORDS))
    if workloads != os.path.join(directory, WORKLOADS):
        # record lines index workloads by line number: renumbering would misattach them
        raise ValueError(f"{directory}: the workload file is corrupt; retune or restore it")
    return ms.database.JSONDatabase(workloads, records, allow_missing=False)


# databases compile() has read, by directory and file stamps: parsing the shipped logs takes
# 6-9 s on a 2-core VM, and a process (a test run, a script) compiles many models
_READ_ONLY: dict = {}


def _stamp(directory: str) -> tuple:
    return tuple((st.st_mtime_ns, st.st_size) for st in (
        os.stat(os.path.join(directory, name)) for name in (WORKLOADS, RECORDS)))


def open_databases(directories: list[str]) -> list[ms.database.Database]:
    """The given database directories, opened for reading (once per process while their files
    are unchanged); one that cannot be is warned about and left out."""
    dbs = []
    for d in directories:
        try:
            key = (os.path.abspath(d), _stamp(d))
            if key not in _READ_ONLY:
                _READ_ONLY[key] = open_database(d)
            dbs.append(_READ_ONLY[key])
        except (ValueError, OSError) as err:
            warnings.warn(f"tuning database {d} not used: {err}", stacklevel=3)
    return dbs


@functools.cache
def cpuinfo() -> dict:
    """The first value of each /proc/cpuinfo field ("vendor_id", "cpu family", "model name",
    ...); empty off Linux.  Read once per process."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    if fields:  # the first processor's block has ended
                        break
                    continue
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_signature() -> str | None:
    """This machine's CPU as tuned schedules depend on it: vendor and family, e.g.
    "AuthenticAMD family 25" (Zen 3/4) or "AuthenticAMD family 26" (Zen 5); None off Linux."""
    info = cpuinfo()
    if "vendor_id" not in info or "cpu family" not in info:
        return None
    return f"{info['vendor_id']} family {info['cpu family']}"


SHOWN_NAMES = 6  # kernel names a one-line summary shows; a garden model has a hundred


def few_names(names: list[str]) -> str:
    """The first SHOWN_NAMES of `names`, and how many more there are."""
    more = len(names) - SHOWN_NAMES
    return ", ".join(names[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")


def tuned_on(log_dir: str) -> str | None:
    """The CPU signature a database's provenance records (None: not recorded)."""
    try:
        with open(os.path.join(log_dir, PROVENANCE)) as f:
            return json.load(f).get("cpu_signature")
    except (OSError, ValueError):
        return None


def shipped_for_this_cpu(dirs: list[str], host: str | None) -> tuple[list[str], list[str]]:
    """(databases tuned on this CPU family or not recorded, those tuned on another)."""
    if host is None:
        return dirs, []
    other = [d for d in dirs if tuned_on(d) not in (None, host)]
    return [d for d in dirs if d not in other], other


def resolve_tune_logs(tune_logs, family_name: str, runs_here: bool = True
                      ) -> tuple[list[str], list[str]]:
    """compile()'s `tune_logs` argument as database directories: (applied, skipped).

    True: the shipped logs of the family, those tuned on another CPU family skipped when the
    family runs on this host (`runs_here`): schedules tuned on Zen 4 ran ResNet-18 8 % slower
    than the default ones on Zen 5 (docs/tuning.md); False/None: none; a path or list of
    paths: those (each a database directory or a tree of them), whatever they were tuned on."""
    if tune_logs is True:
        root = os.path.join(shipped_root(), family_name)
        dirs = database_dirs(root) if os.path.isdir(root) else []
        return shipped_for_this_cpu(dirs, cpu_signature()) if runs_here else (dirs, [])
    if not tune_logs:
        return [], []
    paths = [tune_logs] if isinstance(tune_logs, (str, os.PathLike)) else list(tune_logs)
    dirs = []
    for p in paths:
        dirs.extend(database_dirs(os.fspath(p)))
    return dirs, []


# a float literal in TVMScript: T.float32(0.0202...) or a bare 0.5 / -1.5e-05
_FLOAT_LITERAL = re.compile(r"T\.float(?:16|32|64)\([^()]*\)|(?<![\w.])-?\d+\.\d*(?:e[-+]?\d+)?")
_INT_LITERAL = re.compile(r"(?<![\w.])\d+(?![\w.])")
_STORE = re.compile(r"^(\s*\w+\[[^=]*\] = )(.*)$")


def _blank_store_constants(line: str) -> str:
    """A buffer store with the integer literals of its value blanked outside [] (a zero point,
    a clip bound), the indices kept: they and the loops carry the kernel's shape."""
    match = _STORE.match(line)
    if not match:
        return line
    head, value = match.groups()
    pieces, depth = [], 0
    for piece in re.split(r"([\[\]])", value):
        if piece == "[":
            depth += 1
        elif piece == "]":
            depth -= 1
        elif depth == 0:
            piece = _INT_LITERAL.sub("i", piece)
        pieces.append(piece)
    return head + "".join(pieces)


def kernel_shape_key(func: tvm.tirx.PrimFunc) -> str:
    """A PrimFunc's identity up to its quantization constants: the hash of its TVMScript (as
    MetaSchedule normalizes it for a database) with every float literal blanked, and the
    integer literals of stored values (zero points, clip bounds) too; loops, buffer shapes,
    indices and block regions are kept as they are.  A trace replayed on another calibration
    of the same kernel is still correct: schedule primitives do not change what it computes."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    text = _FLOAT_LITERAL.sub("f", _normalize_mod(func)["main"].script())
    text = "\n".join(_blank_store_constants(line) for line in text.splitlines())
    return hashlib.sha1(text.encode()).hexdigest()
