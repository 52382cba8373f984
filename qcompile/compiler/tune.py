"""`qcompile.tune`: a model's tunable kernels, extracted as compile() builds them, tuned by
qcompile.tuning (which knows nothing of models)."""

from __future__ import annotations

from tvm.s_tir import meta_schedule as ms

from .. import tuning
from ..numerics.contracts import Contract
from ..schedules import resolve_family
from ..schedules.tuning import is_tunable
from .driver import as_numpy, fuse, integer_module, model_contract


def extract_tasks(model, example_inputs, family, contract: Contract, threads: int):
    """The tunable kernels of the model: MetaSchedule ExtractedTasks (weight = calls per run)."""
    integer, _, _ = integer_module(model, [as_numpy(x) for x in example_inputs], contract,
                                   threads, family)
    target = family.tvm_target()
    fused = fuse(integer, target, family)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    return [t for t in tasks if is_tunable(t.dispatched[0]["main"], family)]


def tune_model(model, example_inputs, target="x86", trials=200, work_dir="qcompile-tune",
               numerics=None, threads=None, rpc_tracker=None, rpc_key=None, budget=None,
               **options) -> dict:
    """See qcompile.tune; `options` go to tuning.tune_tasks (trials_per_iter, trials_per_task,
    out, space, seed)."""
    budget_s = None if budget is None else tuning.budget.parse_budget(str(budget))
    contract = model_contract(model, numerics)
    family = resolve_family(target)
    # a bad --rpc-* option fails before the extraction
    runner, remote = tuning.runner_for(family, rpc_tracker, rpc_key)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    tasks = extract_tasks(model, example_inputs, family, contract, threads)
    return tuning.tune_tasks(tasks, family, work_dir, runner, remote, trials=trials,
                             threads=threads, model_name=type(model).__name__,
                             numerics=contract.name, target=target, budget_s=budget_s,
                             **options)
