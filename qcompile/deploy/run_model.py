#!/usr/bin/env python3
"""Run a qcompile model library on a board that has Python (no qcompile needed there).

    pip install apache-tvm==TVM_VERSION apache-tvm-ffi==FFI_VERSION numpy
    python3 run_model.py model.so input.npy output.npy [--threads N] [--repeat R]

The input is one inference's input as a NumPy .npy file (several inputs: a.npy,b.npy); the
output is written as .npy (several outputs: output.0.npy, output.1.npy, ...).  --repeat R
times R more runs of the same input and prints the median latency.
"""

import argparse
import os
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("library")
    p.add_argument("input", help="input .npy (a.npy,b.npy for several inputs)")
    p.add_argument("output", help="output .npy")
    p.add_argument("--threads", type=int,
                   help="worker threads (default: the cores this process may run on)")
    p.add_argument("--repeat", type=int, default=0)
    args = p.parse_args()
    # read when the thread pool starts; unset, TVM starts one worker per two logical cores on x86
    if args.threads:
        os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    import numpy as np
    import tvm
    from tvm import relax

    library = args.library if os.sep in args.library else os.path.join(".", args.library)
    vm = relax.VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())
    inputs = [tvm.runtime.tensor(np.load(path)) for path in args.input.split(",")]
    out = vm["main"](*inputs)
    outs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
    stem = args.output[:-4] if args.output.endswith(".npy") else args.output
    for i, o in enumerate(outs):
        np.save(args.output if len(outs) == 1 else f"{stem}.{i}.npy", o.numpy())
    if args.repeat:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            vm["main"](*inputs)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        print(f"median {times[len(times) // 2]:.3f} ms over {args.repeat} runs, "
              f"{tvm.runtime.num_threads()} threads (min {times[0]:.3f}, max {times[-1]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
