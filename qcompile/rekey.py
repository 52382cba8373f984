"""Carry shipped tuning records over to the kernels the current code extracts.

MetaSchedule finds a record by its kernel's structure.  A change to what a kernel computes
that leaves its blocks and loops alone (a cheaper requantize expression, say) makes every
record of that kernel unreachable, although its schedule trace still applies unchanged.
Re-keying moves the records instead of retuning (the shipped logs were tuned on the
reference machine, which a later session may not have):

    # in a checkout (git worktree) of the commit the logs were made for
    python -m qcompile.rekey dump /tmp/old_kernels.json
    # in the current checkout
    python -m qcompile.rekey apply /tmp/old_kernels.json

`dump` writes the tunable kernels of every zoo model with a shipped log, extracted as
`qcompile tune` extracted them (family and numerics from provenance.json, 2 threads, the
model's first example input).  `apply` extracts the same models with the current code, pairs
the kernels by name (the names must agree), moves the records of each old kernel (found
exactly, else up to its constants as compile() would) onto the new one, and rewrites the
database; records no extracted kernel reaches are dropped.  Measured times are kept: they
were measured on the old kernels.  provenance.json says what was done.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from .compiler.tune import extract_tasks
from .models import first_inputs, load_model
from .numerics.contracts import get_contract
from .schedules import resolve_family
from .tuning.choice import TuneLogs
from .tuning.logs import PROVENANCE, RECORDS, WORKLOADS, database_dirs, shipped_root

THREADS = 2  # the reference machine's cores: what `qcompile tune` used there


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def logged_model_kernels(log_dir: str) -> list[tuple[str, tvm.IRModule]]:
    """(name, module) of each tunable kernel of the log's model, in extraction order."""
    prov = _read_json(os.path.join(log_dir, PROVENANCE))
    name = os.path.basename(log_dir)
    entry = load_model(f"zoo:{name}", prov["numerics"], None)
    tasks = extract_tasks(entry.quantized, first_inputs(entry.example_inputs(1)),
                          resolve_family(prov["target_family"]), get_contract(prov["numerics"]),
                          THREADS)
    return [(t.task_name, t.dispatched[0]) for t in tasks]


def dump(out_path: str) -> None:
    """Write every shipped log's kernels, as this checkout extracts them, to `out_path`."""
    kernels = {}
    for log_dir in database_dirs(shipped_root()):
        key = os.path.relpath(log_dir, shipped_root())
        kernels[key] = [(name, tvm.ir.save_json(mod))
                        for name, mod in logged_model_kernels(log_dir)]
        print(f"{key}: {len(kernels[key])} kernels", flush=True)
    with open(out_path, "w") as f:
        json.dump(kernels, f)


def _records_by_workload(database) -> dict:
    """structural hash of a workload -> all its records (failed runs included)."""
    grouped = {}
    for record in database.get_all_tuning_records():
        grouped.setdefault(tvm_ffi.structural_hash(record.workload.mod), []).append(record)
    return grouped


def rekey_log(log_dir: str, old_kernels: list[tuple[str, str]]) -> dict:
    """Rewrite one database so its records belong to the current code's kernels."""
    new_kernels = dict(logged_model_kernels(log_dir))
    old_names = [name for name, _ in old_kernels]
    if sorted(old_names) != sorted(new_kernels) or len(set(old_names)) != len(old_names):
        raise SystemExit(f"{log_dir}: the kernels differ beyond their computation "
                         f"(old {sorted(old_names)}, new {sorted(new_kernels)}); retune instead")
    old_db = ms.database.JSONDatabase(os.path.join(log_dir, WORKLOADS),
                                      os.path.join(log_dir, RECORDS), allow_missing=False)
    grouped, near = _records_by_workload(old_db), TuneLogs([old_db])
    tmp = tempfile.mkdtemp(prefix="qcompile-rekey-")
    new_db = ms.database.JSONDatabase(os.path.join(tmp, WORKLOADS), os.path.join(tmp, RECORDS))
    counts = {"exact": 0, "near": 0, "none": 0, "records": 0}
    for name, old_json in old_kernels:
        old_mod, new_mod = tvm.ir.load_json(old_json), new_kernels[name]
        records = grouped.get(tvm_ffi.structural_hash(old_mod))
        kind = "exact"
        if records is None:
            similar = near.records(old_mod)
            records = (grouped[tvm_ffi.structural_hash(similar[0].workload.mod)] if similar
                       else None)
            kind = "none" if records is None else "near"
        counts[kind] += 1
        if records is None:
            continue
        workload = new_db.commit_workload(new_mod)
        for r in records:
            new_db.commit_tuning_record(ms.database.TuningRecord(
                r.trace, workload, r.run_secs, r.target, r.args_info))
        counts["records"] += len(records)
        print(f"  {name}: {len(records)} records ({kind})", flush=True)
    for name in (WORKLOADS, RECORDS):
        shutil.move(os.path.join(tmp, name), os.path.join(log_dir, name))
    shutil.rmtree(tmp, ignore_errors=True)
    prov_path = os.path.join(log_dir, PROVENANCE)
    prov = _read_json(prov_path)
    prov.setdefault("rekeyed", []).append({
        "date": datetime.date.today().isoformat(), **counts,
        "note": "records moved onto the kernels the code of this date extracts (same loops and "
                "blocks, a changed computation); traces and measured times unchanged, the times "
                "are the old kernels'"})
    with open(prov_path, "w") as f:
        json.dump(prov, f, indent=1)
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qcompile.rekey", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["dump", "apply"])
    parser.add_argument("kernels", help="the JSON file dump writes and apply reads")
    args = parser.parse_args(argv)
    if args.action == "dump":
        dump(args.kernels)
        return
    old = _read_json(args.kernels)
    for log_dir in database_dirs(shipped_root()):
        key = os.path.relpath(log_dir, shipped_root())
        if key not in old:
            print(f"{key}: not in {args.kernels}, left as it is", file=sys.stderr)
            continue
        print(f"{key}: {rekey_log(log_dir, old[key])}", flush=True)


if __name__ == "__main__":
    main()
