"""The registries: contracts (numerics/contracts.py) and ops (frontend/op_table.py).

A contract is an entry and its kernels, nothing more: a fifth one, registered here, compiles a
zoo model and verify reports against its declared reference."""

from __future__ import annotations

import dataclasses
import tarfile

import numpy as np
import pytest
from tvm import tirx

import qcompile
from qcompile import zoo
from qcompile.frontend import op_table
from qcompile.numerics import contracts
from qcompile.numerics.requantize import fixed_point_rule
from qcompile.numerics.tir_ops import INT32_MIN, clamp

KERNEL_FIELDS = {f.name for f in dataclasses.fields(contracts.Kernels)}


def test_every_op_lowers_to_something_each_contract_has():
    for op in op_table.OPS:
        assert op.lowering in op_table.LOWERINGS or op.lowering in KERNEL_FIELDS, op
    for contract in contracts.contracts_for():
        for name in KERNEL_FIELDS:
            value = getattr(contract.kernels, name)
            if name == "float_islands":  # Relax op name -> formula
                assert all(callable(f) for f in value.values()), (contract.name, name)
                continue
            assert callable(value) or isinstance(value, bool), (contract.name, name)
        assert contract.default == (contract is contracts.default_contract(contract.models))


def test_each_spelling_names_one_op():
    for path in ("fx_modules", "fx_functions", "fx_methods", "torchscript", "aten"):
        spellings = [s for op in op_table.OPS for s in getattr(op, path)]
        assert len(spellings) == len(set(spellings)), path
    assert op_table.ATEN["aten.add.Tensor"] is op_table.BY_NAME["add"].aten["aten.add.Tensor"]


def test_a_name_is_registered_once_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="registered already"):
        contracts.register(contracts.get_contract("integer"))
    with pytest.raises(ValueError, match="have a default contract already"):
        contracts.register(dataclasses.replace(contracts.get_contract("integer"),
                                               name="second_default", default=True))
    with pytest.raises(qcompile.QCompileError, match="unknown numerics 'nope'.*fbgemm"):
        contracts.get_contract("nope")


def _floor_step(rq, acc, channel, lo, hi):
    """integer's fixed-point requantize, truncated (an arithmetic shift) instead of rounded."""
    if rq.bias is not None:
        acc = acc + channel("bias")
    shifted = (acc.astype("int64") * channel("mult")) >> channel("shift")
    r = tirx.max(tirx.min(shifted, tirx.const(2**31 - 1, "int64")),
                 tirx.const(INT32_MIN, "int64")).astype("int32")
    return clamp(clamp(r, -32768, 32767) + rq.out_zero_point, lo, hi)


def _floor_rule(*args):
    return dataclasses.replace(fixed_point_rule(*args), step=_floor_step)


@pytest.fixture
def floor_contract():
    """`integer`, but requantize truncates: the registry entry and its kernel, no more."""
    integer = contracts.get_contract("integer")
    contract = contracts.register(dataclasses.replace(
        integer, name="integer_floor", requantize=_floor_rule,
        summary="integer with a truncating requantize (a test contract)",
        tolerance=contracts.Tolerance("within 2 LSB of fbgemm per layer", exact=False,
                                      layer_steps=lambda r: 2)))
    yield contract
    contracts.unregister(contract.name)


def test_a_fifth_contract_needs_only_its_entry_and_kernel(floor_contract):
    entry = zoo.get("resnet18", image_size=32)
    inputs = entry.example_inputs(3)
    built = {name: qcompile.compile(entry.quantized, inputs[:1], numerics=name,
                                    tune_logs=False) for name in ("integer", "integer_floor")}
    report = qcompile.verify(entry.quantized, built["integer_floor"], inputs)
    assert report["numerics"] == "integer_floor"
    assert report["engine"] == floor_contract.reference.engine == "fbgemm"
    assert report["reference"] == floor_contract.reference.description
    assert report["promise"] == floor_contract.tolerance.description
    assert report["cosine"] > 0.99 and report["top1_agreement"] >= 2 / 3, report
    # its kernel is the one that ran: truncation moves outputs that rounding does not
    ours = np.stack([built["integer_floor"](x) for x in inputs])
    theirs = np.stack([built["integer"](x) for x in inputs])
    assert np.any(ours != theirs)
    assert "integer_floor" in qcompile.CONTRACTS  # and the CLI offers it
    from qcompile.cli import build_parser

    args = build_parser().parse_args(["verify", "zoo:resnet18", "--numerics", "integer_floor"])
    assert args.numerics == "integer_floor"


def test_a_bundle_readme_states_its_contracts_reference_and_promise(tmp_path):
    """An integer library's bundle names fbgemm as its reference and the integer bound, not
    element-for-element equality (the README used to promise that for every contract)."""
    from qcompile.deploy.bundle import package

    entry = zoo.get("resnet18", image_size=32)
    compiled = qcompile.compile(entry.quantized, entry.example_inputs(1), numerics="integer",
                                tune_logs=False)
    library = compiled.export(str(tmp_path / "m.so"))
    bundle = package(library, str(tmp_path / "m.tar.gz"), verbose=False)
    with tarfile.open(bundle) as tar:
        readme = tar.extractfile("m/README.md").read().decode()
    integer = contracts.get_contract("integer")
    assert integer.reference.description in readme
    assert integer.tolerance.description in readme
    assert "element for element" not in readme
