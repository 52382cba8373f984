"""`qcompile bench` produces its report (timings are printed and saved, never asserted)."""

from __future__ import annotations

import json

import pytest

from qcompile.cli import main
from qcompile.compiler.driver import KERNEL_SOURCES


def test_dense_bench_report(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--dense", "16", "64", "48", "--runs", "3", "--warmup", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["runtimes"]) == {"qcompile", "torch_fbgemm"}
    assert report["speedup_vs_fbgemm"] > 0 and report["gops_per_s"]["qcompile"] > 0
    assert "GOP/s" in capsys.readouterr().out


def test_model_bench_with_onnxruntime_and_openvino(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("openvino")
    out = tmp_path / "b.json"
    assert main(["bench", "zoo:mobilenet_v2", "--image-size", "64", "--runs", "3", "--warmup",
                 "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for name in ("qcompile", "torch_fbgemm", "torch_fp32", "onnxruntime_int8", "openvino_int8"):
        assert report["runtimes"][name]["median_ms"] > 0, report
    assert "speedup_vs_onnxruntime" in report and "speedup_vs_openvino" in report
    assert report["notes"] == [], report


def test_bench_needs_a_model(capsys):
    assert main(["bench"]) == 2
    assert "MODEL or --dense" in capsys.readouterr().err


def test_pt2e_bench_times_inductor_instead_of_fbgemm(tmp_path):
    """A PT2E model is timed against torch.compile (Inductor, freezing), not eager fbgemm."""
    pytest.importorskip("torchao")
    out = tmp_path / "b.json"
    assert main(["bench", "zoo:mobilenet_v2", "--pt2e", "x86", "--image-size", "32",
                 "--runs", "3", "--warmup", "1", "--no-onnxruntime", "--no-openvino",
                 "--eager-twin", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["runtimes"]) == {"qcompile", "torch_inductor", "torch_fp32",
                                       "qcompile_eager_twin"}, report
    assert report["speedup_vs_inductor"] > 0 and "speedup_vs_fbgemm" not in report, report
    # the same model quantized in eager mode, compiled and timed in the same rounds
    assert report["speedup_vs_qcompile_eager_twin"] > 0, report
    # the best of what a user would run instead (not fp32, not the twin), and where the
    # figures come from
    assert report["best_peer"] == "torch_inductor", report
    assert report["speedup_vs_best_peer"] == report["speedup_vs_inductor"]
    prov = report["provenance"]
    assert prov["cpu"] and prov["cores"] >= 1 and prov["threads"] >= 1, prov
    assert prov["versions"]["torch"].startswith("2.13") and prov["versions"]["apache-tvm"], prov
    assert prov["command"] and prov["date"].startswith("20"), prov
    assert all(t["p90_ms"] >= t["min_ms"] for t in report["runtimes"].values()), report


def test_eager_twin_needs_a_pt2e_model(capsys):
    assert main(["bench", "zoo:mobilenet_v2", "--eager-twin", "--runs", "1"]) == 2
    assert "--pt2e" in capsys.readouterr().err


def test_kernel_profile_names_every_kernel_and_how_it_was_scheduled(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "zoo:resnet18", "--image-size", "32", "--runs", "3", "--warmup", "1",
                 "--no-onnxruntime", "--no-openvino", "--kernels", "4", "--json", str(out)]) == 0
    profile = json.loads(out.read_text())["kernel_profile"]
    kernels = [k for k in profile["kernels"] if k["name"] != "vm"]
    fused = [k for k in kernels if k["name"].startswith("fused_")]
    # every fused kernel of ResNet-18 ran once per call, with the compile summary's label
    assert len(fused) >= 20 and all(k["calls"] == 1 for k in fused), fused
    assert all(k["schedule"] in KERNEL_SOURCES
               for k in fused), fused
    assert all(k["schedule"] == "vm builtin" for k in kernels if k["name"].startswith("vm."))
    assert abs(sum(k["share"] for k in profile["kernels"]) - 1.0) < 1e-9
    assert [k["ms"] for k in kernels] == sorted((k["ms"] for k in kernels), reverse=True)
    printed = capsys.readouterr().out
    assert "ms/run" in printed and f"the other {len(profile['kernels']) - 5} kernels" in printed


def test_bench_of_a_dynamic_model_with_several_inputs(tmp_path):
    """Token ids and a mask in: every runtime is called with both; PyTorch's trace is timed
    beside the eager model, and ONNX Runtime runs the model quantized dynamically as PyTorch's."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "b.json"
    assert main(["bench", "zoo:bert_encoder", "--runs", "3", "--warmup", "1", "--no-openvino",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for name in ("qcompile", "torch_fbgemm", "torch_fbgemm_traced", "onnxruntime_int8"):
        assert report["runtimes"][name]["median_ms"] > 0, report
    assert report["notes"] == [], report
