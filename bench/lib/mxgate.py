"""A private mxgate for the benchmark: listener 127.0.0.1:PORT with STARTTLS,
its spool in the work dir, every message relayed to the sink over
opportunistic STARTTLS.  TLS protocol and cipher settings are left at
mxgate's defaults (what an operator gets); the Postfix side copies them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import procs
from .procs import BenchError

NAME = "mxgate"


class Mxgate:
    name = NAME

    def __init__(self, binary: Path, workdir: Path, certs: Path, sink_port: int, core: int,
                 max_connections: int):
        self.binary, self.core = binary, core
        self.dir = workdir / "mxgate"
        self.dir.mkdir()
        self.spool = self.dir / "spool"
        self.config = self.dir / "mxgate.toml"
        self.log = self.dir / "mxgate.log"
        self.port = procs.free_port()
        self.proc: subprocess.Popen | None = None
        self.config.write_text(f"""\
# Written by bench/run.
hostname = "mxgate.bench.test"
spool = "{self.spool}"
relay_networks = ["127.0.0.0/8"]

[[listener]]
address = "127.0.0.1:{self.port}"
tls = "may"

[tls]
certificates = [
  {{ cert = "{certs / 'ecdsa.pem'}", key = "{certs / 'ecdsa.key'}" }},
  {{ cert = "{certs / 'rsa.pem'}", key = "{certs / 'rsa.key'}" }},
]

[limits]
max_connections = {max_connections}
max_message_size = 36700160

[timeouts]
command = 3600
shutdown = 5

[[route]]
domain = "*"
next_hop = "smtp:[127.0.0.1]:{sink_port}"
tls = "may"
""")
        # Like for like: the Postfix beside it runs no content filter either
        # (bench/filter-eval measures the filter).  Revisions older than
        # [filter] (bench/before-after) refuse the key and need nothing.
        self.filter_off = "\n[filter]\nenabled = false\n"
        with open(self.config, "a") as f:
            f.write(self.filter_off)

    def check_config(self) -> None:
        out = subprocess.run([str(self.binary), "check-config", "--config", str(self.config)],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0 and "filter: unknown key" in out.stdout + out.stderr:
            self.config.write_text(self.config.read_text().replace(self.filter_off, ""))
            out = subprocess.run([str(self.binary), "check-config", "--config", str(self.config)],
                                 capture_output=True, text=True, timeout=60)
        if out.returncode != 0 or out.stdout.strip() != "ok":
            raise BenchError(f"mxgate check-config refused {self.config}: {out.stdout}{out.stderr}")

    def start(self, timeout: float = 20.0) -> "Mxgate":
        self.check_config()
        with open(self.log, "ab") as log:
            self.proc = procs.spawn([str(self.binary), "serve", "--config", str(self.config)],
                                    core=self.core, stdout=log, stderr=subprocess.STDOUT)
        if not procs.wait_until(lambda: self.proc.poll() is not None or procs.greets(self.port),
                                timeout, 0.05) or self.proc.poll() is not None:
            raise BenchError(f"mxgate did not greet on 127.0.0.1:{self.port}\n{procs.tail(self.log)}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return procs.tree_cpu_seconds(self.pid)

    def memory(self) -> procs.Memory:
        return procs.tree_memory(self.pid)

    def queued(self) -> int:
        """Messages still in the spool (accepted, not yet delivered)."""
        try:
            return sum(1 for _ in os.scandir(self.spool / "queue"))
        except FileNotFoundError:
            return 0

    def log_tail(self) -> str:
        return procs.tail(self.log)

    def stop(self) -> None:
        if self.proc is not None:
            pid = self.proc.pid
            procs.terminate(self.proc, timeout=15)
            procs.kill_remaining([pid], {pid})
            self.proc = None
