"""The x86 families compile for every CPU their summary names: no instruction outside them."""

from __future__ import annotations

import tvm
from tvm.target import codegen

from qcompile.schedules import FAMILIES

# LLVM features that tune code generation but add no instruction
_TUNING = ("fast-", "slow-", "branchfusion", "sbb-dep-breaking", "macrofusion", "false-deps-",
           "no-bypass-delay", "prefer-", "tuning-", "idivq-to-divl", "lea-", "ermsb",
           "allow-light-256-bit", "fsrm", "invpcid")


def _features(target) -> set:
    return {str(f) for f in codegen.llvm_get_cpu_features(tvm.target.Target(target))}


def _instruction_sets(features: set) -> set:
    return {f for f in features if not f.startswith(_TUNING)}


def _assert_runs_on(family_name: str, cpus: tuple) -> set:
    """The family's instruction sets, after checking each of `cpus` has them all."""
    family = _instruction_sets(_features(FAMILIES[family_name].target()))
    for cpu in cpus:
        extra = family - _features({"kind": "llvm", "mcpu": cpu})
        assert not extra, f"{family_name} uses {sorted(extra)}, which {cpu} lacks"
    return family


def test_vnni_family_code_runs_on_ice_lake_and_zen4():
    """Plain znver4 lets LLVM emit SSE4A (insertq/extrq): SIGILL on Intel (MobileNetV2 did)."""
    family = _assert_runs_on("x86-avx512-vnni", ("icelake-server", "znver4"))
    assert {"avx512vnni", "avx512bw", "avx512vbmi"} <= family


def test_avx2_family_code_runs_on_haswell_and_zen1():
    family = _assert_runs_on("x86-avx2", ("haswell", "znver1"))
    assert "avx512f" not in family


def test_amx_family_code_runs_on_sapphire_rapids():
    family = _assert_runs_on("x86-amx", ("sapphirerapids",))
    assert {"amx-int8", "amx-tile", "avx512vnni"} <= family
    assert "amx-int8" not in _features(FAMILIES["x86-avx512-vnni"].target())
