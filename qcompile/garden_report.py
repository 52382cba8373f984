"""`qcompile garden`: every model of the garden (torchvision's quantizable classifiers, random
weights: qcompile/zoo/garden.py) compiled, verified against PyTorch's fbgemm engine and timed
against PyTorch fbgemm, ONNX Runtime int8 and OpenVINO int8 in one process, as a table.  With
`pt2e` (a torchao quantizer), the garden's architectures quantized the PT2E way instead,
verified against the PT2E program and timed against torch.compile (Inductor, freezing).

Compiled with the default schedules only (no tune logs: these are models nobody tuned for)
unless `tune_logs` says otherwise.  One row per model: compile seconds, bit-exact fraction and
largest difference in output steps, medians and speedups.
"""

from __future__ import annotations

import time


def garden_row(name: str, image_size: int | None = None, inputs: int = 4, runs: int = 20,
               warmup: int = 5, threads: int = 2, tune_logs=False, onnxruntime: bool = True,
               openvino: bool = True, time_it: bool = True, pt2e: str | None = None) -> dict:
    """Compile, verify and (with `time_it`) bench one garden model; the table's row."""
    import torch

    import qcompile
    from .benchmark import bench
    from .zoo import garden

    entry = (garden.build_pt2e(name, pt2e, image_size=image_size) if pt2e
             else garden.build(name, image_size=image_size))
    examples = entry.example_inputs(inputs, seed=1234)
    start = time.perf_counter()
    compiled = qcompile.compile(entry.quantized, examples[:1], threads=threads,
                                tune_logs=tune_logs)
    row = {"model": f"garden:{name}", "quantized_as": entry.engine,
           "input_shape": list(entry.input_shape),
           "compile_s": round(time.perf_counter() - start, 1),
           "kernels": compiled.meta["kernels"]}
    report = qcompile.verify(entry.quantized, compiled, examples)
    row.update(bit_exact_fraction=report["bit_exact_fraction"], unit=report["unit"],
               max_abs_lsb=report["max_abs_lsb"], top1_agreement=report["top1_agreement"],
               cosine=report["cosine"])
    if time_it:
        timed = bench(entry.quantized, compiled, examples[0], entry.float_model,
                      calibration=examples, runs=runs, warmup=warmup, threads=threads,
                      onnxruntime=onnxruntime, openvino=openvino, pt2e=pt2e is not None)
        row["runtimes"] = {k: v["median_ms"] for k, v in timed["runtimes"].items()}
        row.update({k: v for k, v in timed.items() if k.startswith("speedup_")})
        row["notes"] = timed["notes"]
    torch.set_num_threads(threads)
    return row


def format_garden(rows: list[dict]) -> str:
    """The rows as a fixed-width table (PyTorch's runtime: fbgemm, or torch.compile for PT2E
    rows)."""
    head = ("model", "input", "compile s", "bit-exact", "max diff", "cosine", "top-1",
            "qcompile ms", "PyTorch ms", "ORT ms", "OpenVINO ms", "vs PyTorch", "vs ORT",
            "vs OpenVINO")
    lines = []
    for r in rows:
        t = r.get("runtimes", {})
        torch_key = "torch_inductor" if "torch_inductor" in t else "torch_fbgemm"
        unit = " ulp" if r.get("unit") == "float32 ulp" else ""
        lines.append((r["model"], "x".join(map(str, r["input_shape"][2:])), f"{r['compile_s']:.1f}",
                      f"{r['bit_exact_fraction']:.6f}", f"{r['max_abs_lsb']}{unit}",
                      f"{r['cosine']:.6f}", f"{r['top1_agreement']:.2f}",
                      *(f"{t[k]:.2f}" if k in t else "-"
                        for k in ("qcompile", torch_key, "onnxruntime_int8", "openvino_int8")),
                      *(f"{r[k]:.2f}x" if k in r else "-"
                        for k in ("speedup_vs_inductor" if torch_key == "torch_inductor"
                                  else "speedup_vs_fbgemm", "speedup_vs_onnxruntime",
                                  "speedup_vs_openvino"))))
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in [head, *lines]]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
