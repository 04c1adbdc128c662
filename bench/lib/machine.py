"""Facts about the machine and the software for the report header, and what
OpenSSL alone sustains for a TLS 1.3 server handshake: the lower bound from
`openssl speed`'s primitives, a whole handshake in memory (tlshandshake), and
OpenSSL's own server over loopback TCP (`openssl s_server` / `s_time`)."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import time
import subprocess
from pathlib import Path

from . import procs
from .procs import BenchError


def _out(argv: list[str], cwd: Path | None = None) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(root: Path) -> str:
    """HEAD's short hash, "+dirty" when tracked files differ from it (the build
    is made from the working tree)."""
    head = _out(["git", "rev-parse", "--short=12", "HEAD"], root) or "unknown"
    dirty = _out(["git", "status", "--porcelain", "--untracked-files=no"], root)
    return head + ("+dirty" if dirty else "")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def facts(root: Path, mxgate: Path, postfix_version: str) -> dict:
    return {
        "nproc": int(_out(["nproc"]) or os.cpu_count() or 0),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "openssl": _out(["openssl", "version"]),
        "postfix": postfix_version,
        "mxgate_commit": git_commit(root),
        "mxgate_version": _out([str(mxgate), "--version"]),
        "memory_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20),
    }


def openssl_handshake_limit(core: int, seconds: int) -> dict:
    """`openssl speed -mr -seconds N ecdsap256 ecdhx25519` on the server's core.

    A TLS 1.3 full handshake costs the server about one ECDSA P-256 signature
    (CertificateVerify), one X25519 key generation and one X25519 derivation
    (key_share); openssl speed's ecdh figure is derivations per second, and a
    key generation is one scalar multiplication too, so it is counted as one
    more.  Seconds per handshake = 1/sign_rate + 2/x25519_rate; OpenSSL's
    handshakes per CPU-second is the inverse.  openssl speed reports rates per
    CPU second of its own process (not wall time), like our server figures."""
    argv = procs.pinned(["openssl", "speed", "-mr", "-seconds", str(seconds), "ecdsap256", "ecdhx25519"], core)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds * 4 + 60)
    sign = x25519 = None
    for line in out.stdout.splitlines():
        parts = line.split(":")
        # +F4:<n>:<bits>:<sign/s>:<verify/s>   (ECDSA)   +F5:<n>:<bits>:<ops/s>:<s/op>   (ECDH)
        if parts[0] == "+F4" and parts[2] == "256":
            sign = float(parts[3])
        elif parts[0] == "+F5" and parts[2] == "253":
            x25519 = float(parts[3])
    if not sign or not x25519:
        raise BenchError(f"cannot parse `{' '.join(argv)}`:\n{out.stdout[-800:]}{out.stderr[-800:]}")
    seconds_per_handshake = 1 / sign + 2 / x25519
    return {
        "command": " ".join(argv),
        "ecdsa_p256_sign_per_s": round(sign, 1),
        "x25519_per_s": round(x25519, 1),
        "ms_per_handshake": round(seconds_per_handshake * 1e3, 4),
        "handshakes_per_cpu_s": round(1 / seconds_per_handshake, 1),
    }


def openssl_tls_handshake(tlshandshake: Path, certs: Path, core: int, seconds: float) -> dict:
    """Full TLS handshakes in memory with mxgate's own server context
    (bench/tools/tlshandshake.cpp), pinned to the server's core: OpenSSL's
    whole server-side cost of one handshake, with no socket and no SMTP."""
    argv = procs.pinned([str(tlshandshake), "--json", "--seconds", str(seconds),
                         "--cert", str(certs / "ecdsa.pem"), "--key", str(certs / "ecdsa.key"),
                         "--cert", str(certs / "rsa.pem"), "--key", str(certs / "rsa.key")], core)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds * 4 + 60)
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise BenchError(f"`{' '.join(argv)}` failed (exit {out.returncode}):\n{out.stdout[-800:]}{out.stderr[-800:]}")


def openssl_s_server_handshake(certs: Path, tls_policy: dict, server_core: int, client_core: int,
                               seconds: int) -> dict:
    """OpenSSL's own TLS server over loopback TCP: `openssl s_server` with
    mxgate's certificates, cipher lists, groups, server preference and one
    TLS 1.3 ticket, pinned to the server's core, taking full handshakes from
    `openssl s_time -new` on the generator's core for `seconds`.  Its CPU per
    handshake (from /proc, like the servers') is what a TLS server made of
    OpenSSL and nothing else costs: the handshake and TCP, no SMTP."""
    port = procs.free_port()
    argv = ["openssl", "s_server", "-quiet", "-naccept", "1000000", "-accept", f"127.0.0.1:{port}",
            "-cert", str(certs / "ecdsa.pem"), "-key", str(certs / "ecdsa.key"),
            "-dcert", str(certs / "rsa.pem"), "-dkey", str(certs / "rsa.key"),
            "-serverpref", "-num_tickets", "1", "-groups", tls_policy["groups"],
            "-cipher", tls_policy["ciphers"], "-ciphersuites", tls_policy["ciphersuites"],
            "-min_protocol", tls_policy["min_version"]]
    server = procs.spawn(argv, server_core, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        if not procs.wait_until(listening, 10, 0.05):
            raise BenchError(f"openssl s_server did not listen on 127.0.0.1:{port}")
        time.sleep(0.2)
        before = procs.tree_cpu_seconds(server.pid)
        client = procs.pinned(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
                               "-time", str(seconds)], client_core)
        out = subprocess.run(client, capture_output=True, text=True, timeout=seconds * 4 + 60)
        after = procs.tree_cpu_seconds(server.pid)
        m = re.search(r"(\d+) connections in [\d.]+s;", out.stdout)
        if not m or int(m.group(1)) == 0 or server.poll() is not None:
            raise BenchError(f"`{' '.join(client)}` against `{' '.join(argv)}` failed:\n"
                             f"{out.stdout[-800:]}{out.stderr[-800:]}")
        handshakes = int(m.group(1))
        cpu = after - before
        return {
            "command": f"{' '.join(procs.pinned(argv, server_core))} & {' '.join(client)}",
            "handshakes": handshakes,
            "server_cpu_s": round(cpu, 3),
            "server_ms_per_handshake": round(cpu * 1e3 / handshakes, 4),
        }
    finally:
        procs.terminate(server)
