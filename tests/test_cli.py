"""The `qcompile` command as a user runs it: compile -> run, verify --json, explain."""

from __future__ import annotations

import json

import numpy as np
import torch

from qcompile import zoo
from qcompile.cli import main
from qcompile.engines import quantized_engine


def test_compile_then_run_matches_pytorch(tmp_path, capsys):
    lib, x_path, y_path = tmp_path / "m.so", tmp_path / "x.npy", tmp_path / "y.npy"
    assert main(["compile", "zoo:resnet18", "--image-size", "64", "-o", str(lib)]) == 0
    entry = zoo.get("resnet18", image_size=64)
    x = entry.example_inputs(1, seed=99)[0]
    np.save(x_path, x.numpy())
    assert main(["run", str(lib), "--input", str(x_path), "--output", str(y_path)]) == 0
    with quantized_engine("fbgemm"), torch.no_grad():
        np.testing.assert_array_equal(np.load(y_path), entry.quantized(x).numpy())


def test_verify_writes_json_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["verify", "zoo:bert_ffn", "--inputs", "2", "--json", str(out),
                 "--per-layer"]) == 0
    report = json.loads(out.read_text())
    assert report["bit_exact_fraction"] == 1.0
    assert report["first_divergent_layer"] is None
    for key in ("max_abs_lsb", "lsb_histogram", "top1_agreement", "cosine", "engine", "threads"):
        assert key in report
    assert "bit_exact_fraction 1.000000" in capsys.readouterr().out


def test_explain_prints_every_layer(capsys):
    assert main(["explain", "zoo:bert_ffn"]) == 0
    text = capsys.readouterr().out
    assert text.count("linear") >= 8 and "qnnpack" in text and "integer" in text


def test_bad_model_spec_is_a_clean_error(capsys, tmp_path):
    assert main(["verify", "resnet.pt"]) == 2
    assert "needs --input-shape" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "resnet.pt"), "--input-shape", "1,3,8,8"]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["verify", "zoo:resnet"]) == 2
    assert "unknown zoo model" in capsys.readouterr().err
