"""Tuning databases on disk: the shipped `tune_logs/` and work dirs of `qcompile tune`.

Layout: a database is a directory holding MetaSchedule's database_workload.json and
database_tuning_record.json (plus provenance.json).  Shipped logs live under
tune_logs/<target family>/<model>/; compile() applies every database of its family by default.
A line that does not parse is skipped with a warning; the rest of the log is used.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

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


def load_databases(directories: list[str]) -> ms.database.Database | None:
    """The union of the given database directories (None if there are none)."""
    dbs = []
    for d in directories:
        try:
            dbs.append(open_database(d))
        except (ValueError, OSError) as err:
            warnings.warn(f"tuning database {d} not used: {err}", stacklevel=2)
    if not dbs:
        return None
    return dbs[0] if len(dbs) == 1 else ms.database.UnionDatabase(*dbs)


def resolve_tune_logs(tune_logs, family_name: str) -> list[str]:
    """compile()'s `tune_logs` argument as database directories.

    True: the shipped logs of the family; False/None: none; a path or list of paths: those
    (each a database directory or a tree of them)."""
    if tune_logs is True:
        root = os.path.join(shipped_root(), family_name)
        return database_dirs(root) if os.path.isdir(root) else []
    if not tune_logs:
        return []
    paths = [tune_logs] if isinstance(tune_logs, (str, os.PathLike)) else list(tune_logs)
    dirs = []
    for p in paths:
        dirs.extend(database_dirs(os.fspath(p)))
    return dirs
