"""Tuning through TVM's RPC tracker: a tracker and an RPC server started on localhost, and
qcompile.tune(..., rpc_tracker=, rpc_key=) measuring every candidate on that server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import qcompile
from qcompile.tuning import logs
from qcompile.schedules import resolve_family

from helpers import inputs_like, quantize_eager, seeded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
START_TIMEOUT_S = 60


def _has_vnni() -> bool:
    return resolve_family("x86-avx512-vnni").runs_here()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _start(args, log_path, env):
    """A TVM rpc tool in its own process group (its popen_worker children join that group)."""
    log = open(log_path, "wb")
    try:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
    finally:
        log.close()


def _stop(proc):
    """Kill the whole process group: a killed rpc_server leaves popen_worker children behind."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # pgid == pid, from start_new_session=True
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _tail(path, n=2000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return "(no log)"


def _wait_until(ready, what, procs_logs):
    """Poll `ready()` until true; fail with the logs if a process died or time ran out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for proc, log in procs_logs:
            if proc.poll() is not None:
                pytest.fail(f"{what}: {proc.args[2]} exited with {proc.returncode}:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.2)
    logs_text = "\n".join(f"--- {log}\n{_tail(log)}" for _, log in procs_logs)
    pytest.fail(f"{what} within {START_TIMEOUT_S} s\n{logs_text}")


def _tracker_listening(port) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _server_registered(port, key) -> bool:
    from tvm import rpc

    try:
        tracker = rpc.connect_tracker(HOST, port)
        try:
            queue = tracker.summary()["queue_info"]
        finally:
            tracker.close()
    except (OSError, RuntimeError):
        return False
    return queue.get(key, {}).get("free", 0) >= 1


@pytest.fixture(scope="module")
def rpc_logs(tmp_path_factory):
    """Where the tracker and the server write their logs (tracker.log, server.log)."""
    return tmp_path_factory.mktemp("rpc")


@pytest.fixture(scope="module")
def rpc_tracker(rpc_logs):
    """(HOST:PORT, key) of a tracker on localhost with one RPC server registered under key."""
    logdir = rpc_logs
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    key = f"qcompile-test-{os.getpid()}"
    tracker_port, server_port = _free_port(), _free_port()
    tracker = server = None
    try:
        # --port-end is exclusive and defaults to 9199: without it a port above 9199 binds nothing
        tracker_log = str(logdir / "tracker.log")
        tracker = _start(["tvm.exec.rpc_tracker", "--host", HOST, "--port", str(tracker_port),
                          "--port-end", str(tracker_port + 1)], tracker_log, env)
        # the server (and connect_tracker) retry a refused connection only every 5 s: wait first
        _wait_until(lambda: _tracker_listening(tracker_port),
                    f"the RPC tracker did not listen on {HOST}:{tracker_port}",
                    [(tracker, tracker_log)])
        server_log = str(logdir / "server.log")
        server = _start(["tvm.exec.rpc_server", "--host", HOST, "--port", str(server_port),
                         "--port-end", str(server_port + 1),
                         "--tracker", f"{HOST}:{tracker_port}", "--key", key], server_log, env)
        _wait_until(lambda: _server_registered(tracker_port, key),
                    f"the RPC server never registered with the tracker {HOST}:{tracker_port} "
                    f"under key {key!r}", [(tracker, tracker_log), (server, server_log)])
        yield f"{HOST}:{tracker_port}", key
    finally:
        _stop(server)
        _stop(tracker)


@pytest.fixture(scope="module")
def small_conv():
    body = torch.nn.Sequential(seeded(torch.nn.Conv2d(16, 32, 3, padding=1), 4), torch.nn.ReLU())
    xs = inputs_like((1, 16, 14, 14), n=3, scale=2.0)
    return quantize_eager(body, xs, fuse=[["body.0", "body.1"]]), xs


@pytest.mark.skipif(not _has_vnni(), reason="tunes the AVX-512 VNNI kernels")
def test_tune_measures_through_the_rpc_tracker(small_conv, rpc_tracker, rpc_logs, tmp_path):
    model, xs = small_conv
    tracker, key = rpc_tracker
    work = str(tmp_path / "work")
    lines = []
    report = qcompile.tune(model, xs[:1], target="x86-avx512-vnni", trials=4, trials_per_iter=4,
                           work_dir=work, rpc_tracker=tracker, rpc_key=key, out=lines.append)
    assert report["trials_run"] >= 4, report
    assert report["tasks"][0]["best_ms"] is not None, f"no candidate ran: {report}"
    # measured on the RPC server, not in-process: it loaded one module per candidate, and
    # one more per candidate the correctness gate ran there (where it is measured)
    server_log = rpc_logs / "server.log"
    served = _tail(server_log, 1 << 20).count("load_module")
    assert report["candidates_checked"] >= 1, report
    assert served >= report["trials_run"] + report["candidates_checked"], \
        f"the RPC server loaded {served} modules:\n{_tail(server_log)}"
    assert logs.open_database(work).get_all_tuning_records(), "no record reached the database"
    assert any(line.startswith("[tune] ") and "trials |" in line for line in lines), lines

    compiled = qcompile.compile(model, xs[:1], target="x86-avx512-vnni", tune_logs=work)
    # the tuned record is used where it measured faster than the default: either may win
    kinds = compiled.meta["kernels"]
    assert kinds["tuned"] + kinds["kept_default"] == 1, kinds
    verified = qcompile.verify(model, compiled, xs)
    assert verified["bit_exact_fraction"] == 1.0, verified


def test_bad_rpc_arguments_are_qcompile_errors(small_conv, tmp_path):
    model, xs = small_conv
    with pytest.raises(qcompile.QCompileError, match="HOST:PORT"):
        qcompile.tune(model, xs[:1], target="x86-avx512-vnni", trials=4, work_dir=str(tmp_path),
                      rpc_tracker="nohostport", rpc_key="k", out=lambda line: None)
    with pytest.raises(qcompile.QCompileError, match="rpc-key"):
        qcompile.tune(model, xs[:1], target="x86-avx512-vnni", trials=4, work_dir=str(tmp_path),
                      rpc_tracker="127.0.0.1:9190", out=lambda line: None)
