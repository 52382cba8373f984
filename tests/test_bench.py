"""`qcompile bench` produces its report (timings are printed and saved, never asserted)."""

from __future__ import annotations

import json

import pytest

from qcompile.cli import main


def test_dense_bench_report(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--dense", "16", "64", "48", "--runs", "3", "--warmup", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["runtimes"]) == {"qcompile", "torch_fbgemm"}
    assert report["speedup_vs_fbgemm"] > 0 and report["gops_per_s"]["qcompile"] > 0
    assert "GOP/s" in capsys.readouterr().out


def test_model_bench_with_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "b.json"
    assert main(["bench", "zoo:mobilenet_v2", "--image-size", "64", "--runs", "3", "--warmup",
                 "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for name in ("qcompile", "torch_fbgemm", "torch_fp32", "onnxruntime_int8"):
        assert report["runtimes"][name]["median_ms"] > 0, report
    assert "speedup_vs_onnxruntime" in report


def test_bench_needs_a_model(capsys):
    assert main(["bench"]) == 2
    assert "MODEL or --dense" in capsys.readouterr().err
