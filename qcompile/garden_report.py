"""`qcompile garden`: every model of the garden (torchvision's quantizable classifiers, random
weights: qcompile/zoo/garden.py) compiled, verified against PyTorch's fbgemm engine and timed
against PyTorch fbgemm, ONNX Runtime int8 and OpenVINO int8 in one process, as a table.

Compiled with the default schedules only (no tune logs: these are models nobody tuned for)
unless `tune_logs` says otherwise.  One row per model: compile seconds, bit-exact fraction and
largest difference in output steps, medians and speedups.
"""

from __future__ import annotations

import time


def garden_row(name: str, image_size: int | None = None, inputs: int = 4, runs: int = 20,
               warmup: int = 5, threads: int = 2, tune_logs=False, onnxruntime: bool = True,
               openvino: bool = True, time_it: bool = True) -> dict:
    """Compile, verify and (with `time_it`) bench one garden model; the table's row."""
    import torch

    import qcompile
    from .benchmark import bench
    from .zoo import garden

    entry = garden.build(name, image_size=image_size)
    examples = entry.example_inputs(inputs, seed=1234)
    start = time.perf_counter()
    compiled = qcompile.compile(entry.quantized, examples[:1], threads=threads,
                                tune_logs=tune_logs)
    row = {"model": f"garden:{name}", "input_shape": list(entry.input_shape),
           "compile_s": round(time.perf_counter() - start, 1),
           "kernels": compiled.meta["kernels"]}
    report = qcompile.verify(entry.quantized, compiled, examples)
    row.update(bit_exact_fraction=report["bit_exact_fraction"],
               max_abs_lsb=report["max_abs_lsb"], top1_agreement=report["top1_agreement"])
    if time_it:
        timed = bench(entry.quantized, compiled, examples[0], entry.float_model,
                      calibration=examples, runs=runs, warmup=warmup, threads=threads,
                      onnxruntime=onnxruntime, openvino=openvino)
        row["runtimes"] = {k: v["median_ms"] for k, v in timed["runtimes"].items()}
        row.update({k: v for k, v in timed.items() if k.startswith("speedup_")})
        row["notes"] = timed["notes"]
    torch.set_num_threads(threads)
    return row


def format_garden(rows: list[dict]) -> str:
    """The rows as a fixed-width table."""
    head = ("model", "input", "compile s", "bit-exact", "max LSB", "qcompile ms", "fbgemm ms",
            "ORT ms", "OpenVINO ms", "vs fbgemm", "vs ORT", "vs OpenVINO")
    lines = []
    for r in rows:
        t = r.get("runtimes", {})
        lines.append((r["model"], "x".join(map(str, r["input_shape"][2:])), f"{r['compile_s']:.1f}",
                      f"{r['bit_exact_fraction']:.6f}", str(r["max_abs_lsb"]),
                      *(f"{t[k]:.2f}" if k in t else "-"
                        for k in ("qcompile", "torch_fbgemm", "onnxruntime_int8", "openvino_int8")),
                      *(f"{r[k]:.2f}x" if k in r else "-"
                        for k in ("speedup_vs_fbgemm", "speedup_vs_onnxruntime",
                                  "speedup_vs_openvino"))))
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in [head, *lines]]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
