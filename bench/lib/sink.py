"""The relay target of both servers: bench/tools/smtpsink (STARTTLS with the
benchmark certificates, accepts everything, counts it in a JSON file that it
rewrites atomically at most every 20 ms)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

from . import procs
from .procs import BenchError


class Sink:
    def __init__(self, binary: Path, certs: Path, workdir: Path, core: int):
        self.binary, self.certs, self.workdir, self.core = binary, certs, workdir, core
        self.count_file = workdir / "sink-count.json"
        self.log = workdir / "sink.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 20.0) -> "Sink":
        argv = [str(self.binary), "--listen", "127.0.0.1:0", "--count-file", str(self.count_file)]
        for name in ("ecdsa", "rsa"):
            argv += ["--cert", str(self.certs / f"{name}.pem"), "--key", str(self.certs / f"{name}.key")]
        with open(self.log, "ab") as log:
            self.proc = procs.spawn(argv, core=self.core, stdout=subprocess.PIPE, stderr=log)
        line = self._first_line(timeout)
        # "listening 127.0.0.1:PORT"
        if not line.startswith("listening "):
            raise BenchError(f"smtpsink did not start: {line!r}\n{procs.tail(self.log)}")
        self.port = int(line.rsplit(":", 1)[1])
        if not procs.wait_until(self.count_file.exists, timeout):
            raise BenchError(f"smtpsink wrote no {self.count_file.name}\n{procs.tail(self.log)}")
        return self

    def _first_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").strip()

    def counts(self) -> dict:
        """{"sessions","tls_sessions","messages","recipients","bytes"}."""
        for _ in range(50):
            try:
                return json.loads(self.count_file.read_text())
            except (OSError, ValueError):
                time.sleep(0.005)  # between the rename and our open: never a torn file, but be lenient
        raise BenchError(f"cannot read {self.count_file}")

    def messages(self) -> int:
        return int(self.counts()["messages"])

    def wait_messages(self, target: int, timeout: float, interval: float = 0.005) -> float | None:
        """Poll until the sink counted at least target messages; the
        monotonic time it was seen, or None after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self.messages() >= target:
                return now
            if now >= deadline:
                return None
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"smtpsink exited with {self.proc.returncode}\n{procs.tail(self.log)}")
            time.sleep(interval)

    def stop(self) -> None:
        if self.proc is not None:
            procs.terminate(self.proc, timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
