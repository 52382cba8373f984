"""aarch64: sdot and NEON kernels, cross-compiled, verified under qemu-user, bundled for a board.

The assembly tests need only TVM.  The rest needs the cross toolchain and qemu (`make
setup-arm`): they skip without them, except under QCOMPILE_REQUIRE_ARM=1 (CI), where a
missing tool fails them with the error a user would see."""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
import torch.nn as nn

import qcompile
import qcompile.zoo as zoo
from qcompile.deploy.emulate import emulate
from qcompile.engines import quantized_engine
from qcompile.schedules import FAMILIES, resolve_family

from helpers import inputs_like, quantize_eager, seeded

ARM = ["aarch64-dotprod", "aarch64-neon"]
_TOOLS = shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")
needs_arm_tools = pytest.mark.skipif(
    not _TOOLS and not os.environ.get("QCOMPILE_REQUIRE_ARM"),
    reason="needs g++-aarch64-linux-gnu and qemu-user (make setup-arm)")
IMAGE = 32  # small inputs: emulation is slow; the full-size runs are behind the `arm` marker


@functools.lru_cache(maxsize=None)
def _zoo_compiled(name: str, target: str, image: int = IMAGE):
    entry = zoo.get(name, "qnnpack", image_size=image)
    compiled = qcompile.compile(entry.quantized, entry.example_inputs(1), target=target,
                                numerics="qnnpack", tune_logs=False)
    return entry, compiled


def _instructions_by_function(asm: str) -> dict:
    """{function label: Counter of mnemonics} from an assembly listing."""
    counts, current = collections.defaultdict(collections.Counter), None
    for line in asm.splitlines():
        label = re.match(r"^([A-Za-z_][\w.$]*):", line)
        if label:
            current = label.group(1)
            continue
        op = re.match(r"^\t([a-z][a-z0-9.]*)\b", line)
        if op and current and not op.group(1).startswith("."):
            counts[current][op.group(1)] += 1
    return counts


def _conv_instructions(compiled) -> collections.Counter:
    asm = compiled.executable.mod.imports[0].inspect_source("asm")
    total = collections.Counter()
    for name, ops in _instructions_by_function(asm).items():
        if "conv2d_packed" in name:
            total += ops
    return total


def test_signed_activation_packing_is_exact(monkeypatch):
    """ARM's shift of the activations to i8 (and the per-channel correction) is exact: checked
    on this machine with a family that packs like ARM but schedules generically."""
    base = FAMILIES["x86-avx2"]
    fake = dataclasses.replace(base, name="x86-signed-test", dot_intrinsic=None, out_block=4,
                               in_block=4, signed_activations=True)
    monkeypatch.setitem(FAMILIES, fake.name, fake)
    body = nn.Sequential(
        seeded(nn.Conv2d(3, 10, 3, stride=2, padding=1), 1), nn.ReLU(),   # zero-point padding
        seeded(nn.Conv2d(10, 6, 1), 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), seeded(nn.Linear(6, 7), 3))  # K=6: padded
    xs = inputs_like((1, 3, 15, 17), n=3, scale=2.0, shift=0.5)
    for engine in ("fbgemm", "qnnpack"):
        model = quantize_eager(copy.deepcopy(body), xs, engine=engine,
                               per_channel=engine == "fbgemm",
                               fuse=[["body.0", "body.1"]])
        compiled = qcompile.compile(model, xs[:1], target=fake.name, numerics=engine,
                                    tune_logs=False)
        assert "conv2d_packed" in compiled.integer_module.script()
        report = qcompile.verify(model, compiled, xs)
        assert report["bit_exact_fraction"] == 1.0, (engine, report)


def test_dotprod_kernels_use_sdot():
    _, compiled = _zoo_compiled("resnet18", "aarch64-dotprod")
    assert compiled.meta["kernels"]["tensorized"] == 20, compiled.meta["kernels"]
    ops = _conv_instructions(compiled)
    assert ops["sdot"] >= 20, ops.most_common(20)


def test_neon_kernels_use_widening_multiplies_not_scalar_code():
    _, compiled = _zoo_compiled("resnet18", "aarch64-neon")
    assert compiled.meta["kernels"]["tensorized"] == 20, compiled.meta["kernels"]
    ops = _conv_instructions(compiled)
    assert ops["sdot"] == 0, "the NEON target must not use dotprod"
    assert ops["smull"] >= 20 and ops["saddlp"] >= 20 and ops["addp"] >= 10, ops.most_common(30)
    # scalar code would load weight bytes one by one (ldrsb) and multiply them in general
    # registers; the only scalar multiplies are index arithmetic, as many as with sdot
    assert ops["ldrsb"] == 0, ops.most_common(30)
    dotprod = _conv_instructions(_zoo_compiled("resnet18", "aarch64-dotprod")[1])
    scalar = ("mul", "madd", "smaddl", "msub", "umaddl")
    assert sum(ops[m] for m in scalar) == sum(dotprod[m] for m in scalar)


@needs_arm_tools
@pytest.mark.parametrize("target", ARM)
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_emulated_zoo_model_is_bit_exact_with_qnnpack(name, target):
    entry, compiled = _zoo_compiled(name, target)
    emulated = emulate(compiled, verbose=False)
    report = qcompile.verify(entry.quantized, emulated, entry.example_inputs(3, seed=5))
    assert report["engine"] == "qnnpack"
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


@needs_arm_tools
def test_verify_emulate_command(tmp_path, capsys):
    from qcompile.cli import main

    out = tmp_path / "r.json"
    assert main(["verify", "zoo:resnet18", "--numerics", "qnnpack", "--target",
                 "aarch64-neon", "--emulate", "--image-size", "32", "--inputs", "2",
                 "--no-tune-logs", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "emulated: qemu-aarch64 -cpu cortex-a72" in text
    import json

    report = json.loads(out.read_text())
    assert report["bit_exact_fraction"] == 1.0 and report["target"] == "aarch64-neon"


@needs_arm_tools
def test_bundle_unpacks_and_its_loader_reproduces_the_output(tmp_path):
    from qcompile.deploy.bundle import package

    entry, compiled = _zoo_compiled("resnet18", "aarch64-dotprod")
    library = compiled.export(str(tmp_path / "resnet18.so"))
    bundle = package(library, str(tmp_path / "resnet18-arm.tar.gz"), verbose=False)
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "board", filter="data")
    root = tmp_path / "board" / "resnet18-arm"
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert names == ["README.md", "lib/libtvm_ffi.so", "lib/libtvm_runtime.so", "model.so",
                     "model.so.json", "qcompile_run", "qcompile_run.cc", "run_model.py"]
    assert "aarch64-dotprod" in (root / "README.md").read_text()
    x = entry.example_inputs(1, seed=9)[0]
    np.save(root / "input.npy", x.numpy())
    # as on the board: no LD_LIBRARY_PATH, the loader's rpath finds lib/
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    done = subprocess.run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "./qcompile_run",
                           "model.so", "input.npy", "output.npy"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with quantized_engine("qnnpack"), torch.no_grad():
        reference = entry.quantized(x).numpy()
    np.testing.assert_array_equal(np.load(root / "output.npy"), reference)
    np.save(tmp_path / "numpy.npy", reference)  # the loader writes numpy's own header
    assert (root / "output.npy").read_bytes() == (tmp_path / "numpy.npy").read_bytes()


def test_loaders_run_a_library_of_this_machine_on_every_core(tmp_path):
    """run_model.py (for boards with Python) and the C++ loader, built for this machine, run a
    library and reproduce its output; left to itself, TVM's pool would start one worker per two
    logical cores on x86, so each loader asks for every core the process may use."""
    from qcompile.deploy.runtime import PYTHON_LOADER, build_loader, runtime_files

    body = nn.Sequential(seeded(nn.Conv2d(3, 8, 3), 1), nn.ReLU(), nn.Flatten())
    xs = inputs_like((1, 3, 8, 8), n=2)
    model = quantize_eager(body, xs, fuse=[["body.0", "body.1"]])
    compiled = qcompile.compile(model, xs[:1], tune_logs=False)
    library = compiled.export(str(tmp_path / "m.so"))
    np.save(tmp_path / "x.npy", xs[1].numpy())
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    env["LD_LIBRARY_PATH"] = ":".join(str(p.parent) for p in runtime_files(compiled.family))
    cores = len(os.sched_getaffinity(0))
    loaders = {"python": [sys.executable, str(PYTHON_LOADER)],
               "c++": [str(build_loader(compiled.family, verbose=False))]}
    for name, loader in loaders.items():
        out = tmp_path / f"{name}.npy"
        done = subprocess.run([*loader, library, str(tmp_path / "x.npy"), str(out), "--repeat",
                               "3"], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, (name, done.stderr)
        assert f"over 3 runs, {cores} threads" in done.stdout, (name, done.stdout)
        np.testing.assert_array_equal(np.load(out), compiled(xs[1]))


def test_cross_compiled_model_says_how_to_run_it(tmp_path):
    _, compiled = _zoo_compiled("resnet18", "aarch64-neon")
    with pytest.raises(qcompile.QCompileError, match="--emulate"):
        compiled(np.zeros(compiled.input_shapes[0], np.float32))
    if shutil.which("aarch64-linux-gnu-g++"):
        library = compiled.export(str(tmp_path / "m.so"))
        with pytest.raises(qcompile.QCompileError, match="qcompile package"):
            qcompile.load(library)


def test_emulate_refuses_a_native_library():
    body = nn.Sequential(seeded(nn.Conv2d(3, 4, 1), 1))
    xs = inputs_like((1, 3, 4, 4), n=1)
    compiled = qcompile.compile(quantize_eager(body, xs), xs, tune_logs=False)
    with pytest.raises(qcompile.QCompileError, match="runs natively here"):
        emulate(compiled)


def test_missing_arm_tools_name_the_fix(monkeypatch):
    from qcompile.deploy import runtime

    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(qcompile.QCompileError, match="make setup-arm"):
        runtime.build_loader(resolve_family("aarch64-dotprod"))


@pytest.mark.arm
@pytest.mark.parametrize("target", ARM)
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_full_size_zoo_model_is_bit_exact_under_emulation(name, target):
    entry, compiled = _zoo_compiled(name, target, image=224)
    report = qcompile.verify(entry.quantized, emulate(compiled, verbose=False),
                             entry.example_inputs(16, seed=1234))
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


def test_tuning_for_a_board_measures_on_the_board():
    entry, _ = _zoo_compiled("resnet18", "aarch64-dotprod")
    with pytest.raises(qcompile.QCompileError, match="--rpc-tracker"):
        qcompile.tune(entry.quantized, entry.example_inputs(1), target="aarch64-dotprod",
                      trials=1, work_dir="unused")


@needs_arm_tools
def test_tuning_candidates_are_linked_for_the_board():
    """MetaSchedule's builder (and the gate) ship aarch64 shared libraries to the RPC device."""
    import tvm
    from tvm import te

    from qcompile.tuning import export_candidate

    a = te.placeholder((64,), "int8", name="a")
    b = te.compute((64,), lambda i: a[i] + 1, name="b")
    target = resolve_family("aarch64-neon").tvm_target()
    lib = tvm.compile(te.create_prim_func([a, b]), target=target)
    path = export_candidate("aarch64-neon", lib)
    header = open(path, "rb").read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


@needs_arm_tools
def test_integer_and_fbgemm_contracts_give_the_same_bits_on_x86_and_arm():
    """No contract depends on the machine: the aarch64 build (emulated) and this machine's
    build of the same model agree bit for bit (integer: no float at all; fbgemm: float
    requantize with the same operation order)."""
    entry = zoo.get("resnet18", "fbgemm", image_size=IMAGE)
    xs = entry.example_inputs(3, seed=11)
    for numerics in ("integer", "fbgemm"):
        host = qcompile.compile(entry.quantized, xs[:1], numerics=numerics, tune_logs=False)
        arm = qcompile.compile(entry.quantized, xs[:1], numerics=numerics, target="aarch64-neon",
                               tune_logs=False)
        for x, (out,) in zip(xs, emulate(arm, verbose=False).run_many(xs)):
            np.testing.assert_array_equal(out, host(x), err_msg=numerics)
