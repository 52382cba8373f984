"""The `qcompile` command: parses arguments, calls the Python API, prints."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .errors import QCompileError
from .models import first_inputs, load_model
from .numerics import CONTRACTS, EAGER, PT2E, default_contract


def _shape(text: str):
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from err


def model_from_args(args):
    """The MODEL argument of a command, with --input-shape, --image-size and --pt2e."""
    return load_model(args.model, args.numerics, args.image_size,
                      input_shape=getattr(args, "input_shape", None),
                      pt2e=getattr(args, "pt2e", None))


def format_report(report: dict) -> str:
    """The verify report as a few readable lines."""
    hist = ", ".join(f"{k} LSB: {v}" for k, v in sorted(report["lsb_histogram"].items()))
    lines = [
        f"numerics {report['numerics']} vs PyTorch {report['engine']} "
        f"({report['inputs']} inputs, {report['threads']} threads"
        + (f", {report['target']}" if report.get("target") else "")
        + (f", emulated: {report['emulated']}" if report.get("emulated") else "") + ")",
        f"  bit_exact_fraction {report['bit_exact_fraction']:.6f}   max_abs_lsb "
        f"{report['max_abs_lsb']}   top1_agreement {report['top1_agreement']}   cosine "
        f"{report['cosine']:.6f}",
        f"  LSB histogram: {hist}",
    ]
    if report.get("unit", "lsb") != "lsb":  # a float output: no quantized step to count in
        lines[1:] = [
            f"  float output: bit_exact_fraction {report['bit_exact_fraction']:.6f}   "
            f"max_abs_error {report['max_abs_error']:.3g}   max_rel_error "
            f"{report.get('max_rel_error', 0.0):.3g}   max {report['max_abs_lsb']} "
            f"{report['unit']}   top1_agreement {report['top1_agreement']}   cosine "
            f"{report['cosine']:.9f}   per sample at least "
            f"{report.get('min_sample_cosine', float('nan')):.6f}",
            f"  measured: {report.get('measured', report['unit'])}"]
    if report.get("cosine_to_float") is not None:
        lines.append(f"  vs the float model: cosine {report['cosine_to_float']:.6f} "
                     f"(PyTorch's int8 run: {report['reference_cosine_to_float']:.6f})")
    if "first_divergent_layer" in report:
        lines.append(f"  first divergent layer: {report['first_divergent_layer']}")
        differing = report.get("differing_layers", {})
        lines.append(f"  layers compared: {report.get('layers_compared')}, differing: "
                     + (", ".join(f"{n} ({d['mismatch_fraction']:.2e}, max {d['max_abs_steps']})"
                                  for n, d in differing.items()) or "none"))
    return "\n".join(lines)


def cmd_compile(args):
    import qcompile

    entry = model_from_args(args)
    compiled = qcompile.compile(entry.quantized, first_inputs(entry.example_inputs(1)),
                                target=args.target,
                                numerics=args.numerics, verbose=True,
                                tune_logs=tune_logs_arg(args))
    compiled.export(args.output)
    print(f"wrote {args.output}")


def tune_logs_arg(args):
    """--no-tune-logs / --tune-logs DIR as compile()'s tune_logs argument."""
    if getattr(args, "no_tune_logs", False):
        return False
    return getattr(args, "tune_logs", None) or True


def cmd_tune(args):
    import qcompile

    entry = model_from_args(args)
    report = qcompile.tune(entry.quantized, first_inputs(entry.example_inputs(1)),
                           target=args.target,
                           trials=args.trials, work_dir=args.work_dir, numerics=args.numerics,
                           rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
                           trials_per_iter=args.trials_per_iter,
                           trials_per_task=args.trials_per_task, budget=args.budget)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(f"database: {args.work_dir} (compile with --tune-logs {args.work_dir})")


def verify_model(args, runs_for_latency: int = 0) -> dict:
    """Compile MODEL and verify it; optionally time qcompile against PyTorch."""
    import qcompile

    entry = model_from_args(args)
    inputs = entry.example_inputs(args.inputs, seed=1234)
    compiled = qcompile.compile(entry.quantized, first_inputs(inputs), target=args.target,
                                numerics=args.numerics, verbose=True, probe=args.per_layer,
                                tune_logs=tune_logs_arg(args))
    if getattr(args, "emulate", False):
        if args.per_layer:
            raise QCompileError("--per-layer is not available with --emulate")
        from .deploy.emulate import emulate

        compiled = emulate(compiled)
    report = qcompile.verify(entry.quantized, compiled, inputs,
                             engine=getattr(args, "reference", None), per_layer=args.per_layer,
                             float_model=getattr(entry, "float_model", None))
    report["model"] = args.model
    report["target"] = compiled.meta.get("target_family")
    if getattr(args, "emulate", False):
        report["emulated"] = compiled.description()
    if runs_for_latency:
        from .benchmark import bench

        timed = bench(entry.quantized, compiled, inputs[0], runs=runs_for_latency, warmup=2,
                      onnxruntime=False, openvino=False)
        report["latency_ms"] = {k: v["median_ms"] for k, v in timed["runtimes"].items()}
    return report


def cmd_verify(args):
    report = verify_model(args)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")


def cmd_demo(args):
    args.model, args.numerics, args.inputs, args.per_layer, args.target = (
        "zoo:resnet18", None, args.inputs, False, "x86")
    report = verify_model(args, runs_for_latency=10)
    print(format_report(report))
    lat = report["latency_ms"]
    print("  latency (batch 1, median of 10 interleaved runs, shipped tune logs): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in lat.items()))


def cmd_explain(args):
    from .explain_layers import explain, format_explain

    entry = model_from_args(args)
    report = explain(entry.quantized, first_inputs(entry.example_inputs(1)), layer=args.layer,
                     target=args.target)
    print(format_explain(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


def cmd_fuzz(args):
    try:
        import hypothesis  # noqa: F401
    except ImportError as err:
        raise QCompileError("qcompile fuzz needs hypothesis: pip install 'qcompile[test]' "
                            "(or pip install hypothesis)") from err
    from .fuzz import replay, run

    if args.replay:
        print(json.dumps(replay(args.replay)))
        return
    summary = run(args.n, args.seed, args.out_dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
        print(f"wrote {args.json}")
    if summary["failures"]:
        raise QCompileError(f"{summary['failures']} graphs outside the declared contract; "
                            f"reproducers in {args.out_dir}/ (qcompile fuzz --replay FILE)")


def cmd_garden(args):
    from .garden_report import format_garden, garden_row
    from .provenance import provenance
    from .zoo.garden import GARDEN, PT2E_GARDEN

    names = args.names or list(PT2E_GARDEN if args.pt2e else GARDEN)
    rows = []
    for name in names:
        print(f"[garden] {name} ...", flush=True)
        rows.append(garden_row(name, image_size=args.image_size, inputs=args.inputs,
                               runs=args.runs, warmup=args.warmup, threads=args.threads,
                               tune_logs=args.tune_logs or False,
                               onnxruntime=not args.no_onnxruntime,
                               openvino=not args.no_openvino, time_it=args.runs > 0,
                               pt2e=args.pt2e))
        print(format_garden(rows[-1:]).splitlines()[-1], flush=True)
    print(format_garden(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "command": " ".join(sys.argv),
                       "provenance": provenance(args.threads)}, f, indent=1)
        print(f"wrote {args.json}")


def cmd_package(args):
    from .deploy.bundle import package

    path = package(args.library, args.output)
    print(f"wrote {path}")


def cmd_run(args):
    import qcompile

    compiled = qcompile.load(args.library)
    x = np.load(args.input)
    out = compiled(x)
    out = out[0] if isinstance(out, tuple) else out
    if args.output:
        np.save(args.output, out)
        print(f"wrote {args.output} {out.shape} {out.dtype}")
    else:
        print(out)


def cmd_bench(args):
    import os

    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    import torch

    import qcompile
    from .benchmark import bench, dense_model, format_bench, format_kernels, profile_kernels

    torch.set_num_threads(args.threads)
    if args.pt2e and not args.model:
        raise QCompileError("--pt2e quantizes a zoo model: give MODEL (zoo:NAME)")
    if args.eager_twin and not args.pt2e:
        raise QCompileError("--eager-twin times a PT2E model against its eager twin: give "
                            "--pt2e x86|xnnpack")
    gops = None
    if args.dense:
        m, k, n = args.dense
        quantized, x = dense_model(m, k, n)
        float_model, calibration = None, None
        gops = 2.0 * m * k * n / 1e9
    elif args.model:
        entry = load_model(args.model, None, args.image_size, input_shape=args.input_shape,
                           pt2e=args.pt2e)
        inputs = entry.example_inputs(args.batch * 4, seed=77)
        calibration = [_batched(inputs[i:i + args.batch])
                       for i in range(0, len(inputs), args.batch)]
        x = calibration[0]
        quantized, float_model = entry.quantized, entry.float_model
    else:
        raise QCompileError("bench needs MODEL or --dense M K N")
    compiled = qcompile.compile(quantized, _call_args(x), target=args.target,
                                threads=args.threads, verbose=True,
                                tune_logs=tune_logs_arg(args))
    others = {}
    if args.eager_twin:
        twin = load_model(args.model, None, args.image_size, input_shape=args.input_shape)
        others["qcompile_eager_twin"] = qcompile.compile(
            twin.quantized, _call_args(x), target=args.target, threads=args.threads, verbose=True,
            tune_logs=tune_logs_arg(args))
    if args.vs_defaults:
        others["qcompile_default_schedules"] = qcompile.compile(
            quantized, _call_args(x), target=args.target, threads=args.threads, verbose=True,
            tune_logs=False)
    report = bench(quantized, compiled, x, float_model, calibration, runs=args.runs,
                   warmup=args.warmup, threads=args.threads, onnxruntime=not args.no_onnxruntime,
                   openvino=not args.no_openvino, pt2e=bool(args.pt2e), others=others,
                   traced=isinstance(x, tuple))
    report["model"] = args.model or f"dense {m}x{k}x{n}"
    if gops:
        report["gops_per_s"] = {k2: gops / v["median_ms"] * 1e3
                                for k2, v in report["runtimes"].items()}
    print(format_bench(report, gops))
    if args.kernels:
        report["kernel_profile"] = profile_kernels(compiled, x, runs=args.runs)
        print(format_kernels(report["kernel_profile"], args.kernels))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")


def _batched(inputs: list):
    """Several calls' inputs as one batch: tensors concatenated, or (ids, mask) pairs
    concatenated member by member."""
    import torch

    if isinstance(inputs[0], (list, tuple)):
        return tuple(torch.cat(parts) for parts in zip(*inputs))
    return torch.cat(inputs)


def _call_args(x) -> list:
    """One call's inputs as compile's example_inputs."""
    return list(x) if isinstance(x, tuple) else [x]


def build_parser() -> argparse.ArgumentParser:
    from qcompile.schedules import TARGETS

    p = argparse.ArgumentParser(prog="qcompile", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    target_help = f"{' | '.join(TARGETS)} (default x86: the best x86 family this host runs)"

    def tune_log_args(s):
        g = s.add_mutually_exclusive_group()
        g.add_argument("--no-tune-logs", action="store_true",
                       help="do not apply the shipped tuning databases (tune_logs/)")
        g.add_argument("--tune-logs", metavar="DIR",
                       help="apply the tuning databases under DIR instead of the shipped ones")

    def model_args(s, numerics=True):
        s.add_argument("model", help="zoo:resnet18 | zoo:mobilenet_v2 | zoo:mobilenet_v3_small "
                                     "| zoo:bert_ffn | zoo:bert_ffn_dynamic | garden:NAME "
                                     "(torchvision's quantizable classifiers: qcompile garden "
                                     "--help lists them) | a TorchScript file (torch.jit.save, .pt) | "
                                     "an exported PT2E program (torch.export.save, .pt2)")
        s.add_argument("--input-shape", type=_shape, metavar="N,C,H,W",
                       help="the input shape of a model file")
        if numerics:
            s.add_argument("--numerics", choices=list(CONTRACTS), default=None,
                           help=f"numerics contract (default: "
                                f"{default_contract(PT2E, 'uint8').name} for PT2E models with "
                                f"uint8 activations (X86InductorQuantizer), "
                                f"{default_contract(PT2E).name} for other PT2E models, else "
                                f"{default_contract(EAGER).name})")
        s.add_argument("--pt2e", choices=("x86", "xnnpack"), default=None,
                       help="quantize the zoo model with PT2E (torchao) and this quantizer "
                            "instead of eager mode")
        s.add_argument("--image-size", type=int, default=None,
                       help="input resolution of the zoo CNNs (default 224)")

    s = sub.add_parser("compile", help="compile a model to a .so")
    model_args(s)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--target", default="x86", help=target_help)
    tune_log_args(s)
    s.set_defaults(fn=cmd_compile)

    s = sub.add_parser("tune", help="tune the int8 kernels with MetaSchedule (resumable)")
    model_args(s)
    s.add_argument("--target", default="x86", help=target_help)
    s.add_argument("--trials", type=int, default=200, help="total trials, split evenly among "
                   "the kernels (a rerun tunes the kernels below their share)")
    s.add_argument("--work-dir", required=True)
    s.add_argument("--trials-per-task", type=int, default=None,
                   help="trials per extracted kernel (overrides --trials)")
    s.add_argument("--trials-per-iter", type=int, default=16)
    s.add_argument("--budget", metavar="TIME",
                   help="tune for this long (30m, 1h, 1h30m), trials going to each kernel by "
                   "its share of the model's runtime (overrides --trials)")
    s.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="measure on devices registered with a TVM RPC tracker")
    s.add_argument("--rpc-key", help="the device key registered with the tracker")
    s.add_argument("--json", help="write the tuning report here")
    s.set_defaults(fn=cmd_tune)

    s = sub.add_parser("verify", help="compile and compare with PyTorch, in LSBs")
    model_args(s)
    s.add_argument("--inputs", type=int, default=16)
    s.add_argument("--json")
    s.add_argument("--per-layer", action="store_true")
    s.add_argument("--reference", metavar="R",
                   help="compare with R instead of the contract's reference: another engine "
                        "(fbgemm, qnnpack, x86) for eager models; 'pt2e' (the eager program) "
                        "or 'torch.compile' for PT2E models")
    s.add_argument("--target", default="x86", help=target_help)
    s.add_argument("--emulate", action="store_true",
                   help="for another architecture (aarch64-*): run the .so under qemu-user "
                        "with the C++ loader")
    tune_log_args(s)
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("explain", help="per-layer scales, int32 bias and requantize multipliers")
    model_args(s)
    s.add_argument("--layer")
    s.add_argument("--target", default="x86", help="the CPU family a PT2E model's inductor "
                                                    "contract scales for (AMX or not)")
    s.add_argument("--json")
    s.set_defaults(fn=cmd_explain)

    s = sub.add_parser("package", help="bundle a .so with the runtime and loaders for a board")
    s.add_argument("library")
    s.add_argument("-o", "--output", required=True, help="bundle.tar.gz")
    s.set_defaults(fn=cmd_package)

    s = sub.add_parser("fuzz", help="differential fuzzing: random quantized graphs vs PyTorch")
    s.add_argument("--n", type=int, default=200, help="graphs to run")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out-dir", default="fuzz-failures", help="where failing specs are saved")
    s.add_argument("--json", help="write the summary here")
    s.add_argument("--replay", metavar="FILE", help="re-check one saved failing spec")
    s.set_defaults(fn=cmd_fuzz)

    s = sub.add_parser("run", help="run a compiled .so on an .npy input")
    s.add_argument("library")
    s.add_argument("--input", required=True)
    s.add_argument("--output")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("bench", help="time qcompile against PyTorch and ONNX Runtime")
    s.add_argument("model", nargs="?", help="zoo:NAME (or use --dense)")
    s.add_argument("--dense", type=int, nargs=3, metavar=("M", "K", "N"),
                   help="single-op mode: an int8 dense of MxK times KxN, in GOP/s")
    s.add_argument("--image-size", type=int, default=None)
    s.add_argument("--input-shape", type=_shape, metavar="N,C,H,W",
                   help="the input shape of a model file")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--runs", type=int, default=50)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--target", default="x86")
    s.add_argument("--no-onnxruntime", action="store_true")
    s.add_argument("--no-openvino", action="store_true")
    s.add_argument("--pt2e", choices=("x86", "xnnpack"), default=None,
                   help="quantize the zoo model with PT2E (this torchao quantizer) and time it "
                        "against torch.compile (Inductor, freezing) instead of fbgemm")
    s.add_argument("--eager-twin", action="store_true",
                   help="with --pt2e: also compile the same model quantized in eager mode "
                        "(fbgemm) and time both qcompile builds in the same rounds")
    s.add_argument("--vs-defaults", action="store_true",
                   help="also compile without tune logs (the default schedules) and time both "
                        "builds in the same rounds: what the tune logs (--tune-logs DIR) bought")
    s.add_argument("--kernels", type=int, nargs="?", const=15, default=0, metavar="N",
                   help="then time qcompile kernel by kernel and list the N slowest (15)")
    s.add_argument("--json")
    tune_log_args(s)
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("garden", help="torchvision's quantizable classifiers (or, with --pt2e, "
                                      "architectures from torchvision and timm quantized with "
                                      "PT2E): compile, verify and time each (a table)")
    from .zoo.garden import GARDEN, PT2E_GARDEN
    s.add_argument("names", nargs="*",
                   help=f"garden models, of {', '.join(GARDEN)} (default: all of them); with "
                        f"--pt2e also {', '.join(PT2E_GARDEN)} (default: these)")
    s.add_argument("--pt2e", choices=("x86", "xnnpack"),
                   help="quantize with torchao's PT2E quantizer (x86: X86InductorQuantizer); "
                        "verify against the PT2E program, time against torch.compile")
    s.add_argument("--image-size", type=int, default=None,
                   help="input resolution (default: each model's own, 224 or 299)")
    s.add_argument("--inputs", type=int, default=4, help="verify inputs per model")
    s.add_argument("--runs", type=int, default=20, help="timed runs per runtime (0: no timing)")
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--tune-logs", metavar="DIR",
                   help="apply the tuning databases under DIR (default: none)")
    s.add_argument("--no-onnxruntime", action="store_true")
    s.add_argument("--no-openvino", action="store_true")
    s.add_argument("--json")
    s.set_defaults(fn=cmd_garden)

    s = sub.add_parser("demo", help="compile + verify the built-in ResNet-18, print latency")
    s.add_argument("--inputs", type=int, default=8)
    s.add_argument("--image-size", type=int, default=None)
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except QCompileError as err:
        print(f"qcompile: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
