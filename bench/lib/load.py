"""smtpload runs (bench/tools/smtpload, pinned to the generator's core), and
Postfix's smtp-source for the check that both generators agree."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Callable

from . import procs
from .procs import BenchError


def _parse(stdout: str, stderr: str, argv: list[str]) -> dict:
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"smtpload printed no JSON report: {' '.join(argv)}\n{stdout[-1500:]}\n{stderr[-1500:]}")


def check(report: dict, returncode: int, argv: list[str], stderr: str) -> None:
    """Any failed session or message is a broken run, not a figure."""
    if returncode != 0 or report.get("sessions_failed") or report.get("messages_failed"):
        raise BenchError(
            f"smtpload reported failures (exit {returncode}): sessions_failed={report.get('sessions_failed')} "
            f"messages_failed={report.get('messages_failed')} by stage {report.get('failures_by_stage')}\n"
            f"first failures: {report.get('failure')}\ncommand: {' '.join(argv)}\n{stderr[-1500:]}")


def _run_to_end(argv: list[str], core: int, timeout: float) -> tuple[int, str, str]:
    """A generator pinned to core, run to its end: (exit status, stdout, stderr)."""
    proc = procs.spawn(argv, core=core, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.terminate(proc, 2)
        raise BenchError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s: {' '.join(argv)}")
    finally:
        if proc.poll() is None:
            procs.terminate(proc, 2)
    return proc.returncode, stdout, stderr


def run(binary: Path, port: int, core: int, args: list[str], timeout: float) -> dict:
    """smtpload in load mode; its JSON report.  Raises BenchError on any failure."""
    argv = [str(binary), "--server", f"127.0.0.1:{port}", *args, "--json"]
    returncode, stdout, stderr = _run_to_end(argv, core, timeout)
    report = _parse(stdout, stderr, argv)
    check(report, returncode, argv, stderr)
    report["stderr"] = stderr.strip()
    return report


def run_smtp_source(port: int, core: int, sessions: int, total: int, size: int, timeout: float) -> dict:
    """Postfix's smtp-source: TOTAL cleartext messages, one per session,
    SESSIONS at a time, SIZE bytes each (its own few headers plus a payload
    of 'X' lines), to 127.0.0.1:PORT.  A report with smtpload's keys where
    smtp-source has the figure (it measures no latency, speaks no TLS).
    smtp-source stops at the first unexpected reply, so exit status 0 means
    every message was answered 250."""
    # smtp-source's own headers (From, To, Date, Message-Id, Subject) come
    # to about 170 bytes: the payload makes up the rest of SIZE.
    argv = ["smtp-source", "-s", str(sessions), "-m", str(total), "-l", str(max(size - 170, 1)),
            "-M", "smtp-source.example.org", "-f", "loadtest@example.org", "-t", "sink@example.test",
            "-S", "bench", f"127.0.0.1:{port}"]
    started = time.monotonic()
    returncode, stdout, stderr = _run_to_end(argv, core, timeout)
    elapsed = time.monotonic() - started
    if returncode != 0:
        raise BenchError(f"smtp-source failed (exit {returncode}): {' '.join(argv)}\n{stdout[-800:]}{stderr[-800:]}")
    return {
        "messages_ok": total, "sessions_ok": total, "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(total / elapsed, 1),
        "latency_ms_p50": None, "latency_ms_p99": None, "handshake_ms_p50": None, "handshake_ms_p99": None,
        "tls_versions": {}, "tls_ciphers": {}, "tls_server_keys": {}, "cpu_percent": None,
    }


def run_idle(binary: Path, port: int, core: int, count: int, hold: int, ramp: int, tls: str,
             while_held: Callable[[int], dict], timeout: float) -> tuple[dict, dict]:
    """smtpload --idle COUNT --hold HOLD --ramp RAMP; once it says every connection is
    established, while_held(K) runs (it measures the server); returns
    (smtpload's report, what while_held returned).  while_held must finish
    well within the hold, which is checked."""
    argv = [str(binary), "--server", f"127.0.0.1:{port}", "--idle", str(count), "--hold", str(hold),
            "--ramp", str(ramp), "--tls", tls, "--json"]
    proc = procs.spawn(argv, core=core, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        established, stderr = _wait_established(proc, timeout)
        if established is None:
            procs.terminate(proc, 2)
            raise BenchError(f"smtpload never reported its idle connections established within {timeout:.0f} s: "
                             f"{' '.join(argv)}\n{stderr[-1500:]}")
        started = time.monotonic()
        measured = while_held(established)
        spent = time.monotonic() - started
        if proc.poll() is not None or spent > hold * 0.8:
            raise BenchError(f"measuring the held connections took {spent:.1f} s of a {hold} s hold; "
                             "raise the hold of scenario e")
        out, err = proc.communicate(timeout=hold + timeout)
        stderr += err.decode(errors="replace")
    finally:
        if proc.poll() is None:
            procs.terminate(proc, 2)
    report = _parse(out.decode(errors="replace"), stderr, argv)
    check(report, proc.returncode, argv, stderr)
    return report, measured


def _wait_established(proc: subprocess.Popen, timeout: float) -> tuple[int | None, str]:
    """Read smtpload's stderr until "idle_connections_established K"."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    text = ""
    deadline = time.monotonic() + timeout
    while True:
        for line in text.splitlines():
            if line.startswith("idle_connections_established "):
                return int(line.split()[1]), text
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None, text
        chunk = os.read(fd, 65536)  # not the buffered object: communicate() reads the fd later
        if not chunk:
            return None, text
        text += chunk.decode(errors="replace")
