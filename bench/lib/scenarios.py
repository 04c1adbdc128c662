"""The scenarios of issue 4, their sizes (full and --quick), and how one run
of one scenario against one server is measured."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import load, machine, procs
from .procs import BenchError
from .sink import Sink

KIB = 1024


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # "load": messages; "handshake": sessions without messages; "idle": held connections
    tls: str = "none"  # smtpload --tls
    sessions: int = 50  # concurrent sessions
    messages: int = 1  # per session
    total: int = 0  # sessions in all
    size: int = 5 * KIB  # message content bytes
    idle: int = 0  # idle connections held
    hold: int = 0  # seconds they are held
    ramp: int = 100  # idle connections being set up at once (smtpload --ramp)
    max_runs: int = 0  # runs per invocation, whatever --repeats says; 0: one per repeat
    default: bool = True  # part of a run without --scenarios
    generator: str = "smtpload"  # or "smtp-source" (Postfix's), for the generators' agreement check

    @property
    def expected_messages(self) -> int:
        return self.total * self.messages

    def smtpload_args(self) -> list[str]:
        return ["--sessions", str(self.sessions), "--total", str(self.total), "--messages", str(self.messages),
                "--size", str(self.size), "--tls", self.tls]

    def describe(self) -> str:
        if self.kind == "idle":
            return (f"{self.idle:,} idle {'STARTTLS' if self.tls != 'none' else 'cleartext'} connections "
                    f"(EHLO done, set up {self.ramp} at a time), held {self.hold} s"
                    + (f"; {self.max_runs} run per invocation" if self.max_runs else ""))
        if self.kind == "handshake":
            return (f"{self.total:,} STARTTLS sessions without mail (EHLO, STARTTLS, EHLO, QUIT), "
                    f"{self.sessions} at a time")
        size = f"{self.size // KIB:,} KiB" if self.size < KIB * KIB else f"{self.size // (KIB * KIB)} MiB"
        tls = "STARTTLS" if self.tls == "starttls" else "cleartext"
        by = "; load from Postfix's smtp-source instead of smtpload" if self.generator == "smtp-source" else ""
        return (f"{tls}, {size} messages, {self.sessions} concurrent sessions, {self.messages} per session, "
                f"{self.expected_messages:,} messages{by}")


# Full sizes: each run costs several seconds of server CPU (Postfix, the
# slower peer, 5-15 s), so that the 10 ms CPU clock and start/stop effects
# stay far below the spread between repeats, and 3 repeats fit in the 15
# minutes on 2 cores.  e runs once: memory does not move with the machine's
# load as rates do, and Postfix spends about 14 ms of CPU starting each of its
# 5,000 smtpd processes (70 s a run).  It runs last: Postfix keeps those
# processes for max_idle (100 s) after the hold.
FULL = [
    Scenario("a", "cleartext, 1 message per session", "load", tls="none", sessions=50, messages=1, total=2000),
    # a again with Postfix's own load generator: smtpload and smtp-source
    # must agree on the same load (rates and server CPU), or smtpload is
    # wrong.  A check of the generator, not a figure to follow: one run.
    Scenario("as", "a, driven by Postfix's smtp-source", "load", tls="none", sessions=50, messages=1, total=2000,
             generator="smtp-source", max_runs=1),
    Scenario("b", "STARTTLS, full handshake per message", "load", tls="starttls", sessions=50, messages=1, total=2000),
    Scenario("c", "STARTTLS, 100 messages per session", "load", tls="starttls", sessions=50, messages=100, total=50),
    Scenario("d", "STARTTLS, 1 MiB messages", "load", tls="starttls", sessions=10, messages=10, total=10,
             size=KIB * KIB),
    Scenario("f", "STARTTLS handshake rate", "handshake", tls="starttls", sessions=50, messages=0, total=2000),
    Scenario("e", "5,000 idle connections", "idle", tls="none", idle=5000, hold=20, max_runs=1),
    # The same with STARTTLS done, for the memory of an idle TLS session.
    # 1,000, not 5,000: Postfix forks an smtpd and runs a handshake in it for
    # each (about 16 s for 1,000 on a quiet core, minutes for 5,000), and
    # 1,000 already puts the per-connection figure far above the noise.
    Scenario("g", "1,000 idle STARTTLS connections", "idle", tls="starttls", idle=1000, hold=20, max_runs=1),
]

# --quick: a smoke run of every code path, a few seconds per scenario.
QUICK_SIZES = {
    "a": dict(total=200),
    "as": dict(total=200),
    "b": dict(total=200),
    "c": dict(sessions=10, messages=20, total=10),
    "d": dict(sessions=5, messages=2, total=5),
    "f": dict(total=200),
    "e": dict(idle=200, hold=6),
    "g": dict(idle=200, hold=6),
}


def select(keys: list[str] | None, quick: bool) -> list[Scenario]:
    chosen = []
    for s in FULL:
        if (keys is None and s.default) or (keys is not None and s.key in keys):
            chosen.append(replace(s, **QUICK_SIZES[s.key]) if quick else s)
    return chosen


# --------------------------------------------------------------------------
# One run


@dataclass
class Context:
    smtpload: Path
    sink: Sink
    generator_core: int
    # OpenSSL's primitives' bound on core server_core (`openssl speed`, once per invocation)
    openssl_handshakes_per_cpu_s: float
    # For the references measured just before every run of f: the in-memory
    # handshake and OpenSSL's own server (s_server) with mxgate's TLS policy
    tlshandshake: Path
    certs: Path
    server_core: int
    tls_policy: dict
    reference_seconds: int = 2
    idle_before_run: float = 1.0  # seconds a server sits idle before a run


def run(scenario: Scenario, server, ctx: Context) -> dict:
    """One run of scenario against server (mxgate.Mxgate or postfix.Postfix)."""
    if not server.alive():
        raise BenchError(f"{server.name} is not running\n{server.log_tail()}")
    # Drained and idle: nothing of the previous run is counted in this one.
    if not procs.wait_until(lambda: server.queued() == 0, 120, 0.05):
        raise BenchError(f"{server.name} still has {server.queued()} queued messages before the run")
    time.sleep(ctx.idle_before_run)
    if scenario.kind == "idle":
        return _run_idle(scenario, server, ctx)
    return _run_load(scenario, server, ctx)


def _run_load(scenario: Scenario, server, ctx: Context) -> dict:
    reference = None
    if scenario.kind == "handshake":
        # Moments before the run, on the same core: the machine's speed moves
        # from minute to minute on a shared host, the ratio much less.
        reference = machine.openssl_tls_handshake(ctx.tlshandshake, ctx.certs, ctx.server_core,
                                                  ctx.reference_seconds)
        s_server = machine.openssl_s_server_handshake(ctx.certs, ctx.tls_policy, ctx.server_core,
                                                      ctx.generator_core, ctx.reference_seconds)
        time.sleep(ctx.idle_before_run)
    sink_before = ctx.sink.messages()
    cpu_before = server.cpu_seconds()
    start = time.monotonic()
    if scenario.generator == "smtp-source":
        report = load.run_smtp_source(server.port, ctx.generator_core, scenario.sessions, scenario.total,
                                      scenario.size, timeout=600)
    else:
        report = load.run(ctx.smtpload, server.port, ctx.generator_core, scenario.smtpload_args(), timeout=600)
    load_end = time.monotonic()
    accepted = int(report["messages_ok"])
    if accepted != scenario.expected_messages:
        raise BenchError(f"{server.name}: smtpload sent {accepted} messages, expected {scenario.expected_messages}")
    target = sink_before + accepted
    # Generous: a server that delivers far slower than it accepts is still measured.
    drain_timeout = max(60.0, 20 * (load_end - start))
    seen = ctx.sink.wait_messages(target, drain_timeout)
    if seen is None:
        got = ctx.sink.messages() - sink_before
        raise BenchError(f"{server.name} lost messages: it accepted {accepted}, the sink received {got} "
                         f"within {drain_timeout:.0f} s ({server.queued()} still queued)\n{server.log_tail()}")
    if not procs.wait_until(lambda: server.queued() == 0, drain_timeout, 0.02):
        raise BenchError(f"{server.name}: the sink has every message but {server.queued()} stay queued\n"
                         f"{server.log_tail()}")
    cpu_after = _settled_cpu(server)
    duplicates = ctx.sink.messages() - target
    cpu = cpu_after - cpu_before
    result = {
        "server_cpu_s": round(cpu, 3),
        "elapsed_s": report["elapsed_s"],
        "delivered_s": round(seen - start, 3),
        "sessions": report["sessions_ok"],
        "messages": accepted,
        "duplicates_at_sink": duplicates,
        "latency_ms_p50": report["latency_ms_p50"],
        "latency_ms_p99": report["latency_ms_p99"],
        "handshake_ms_p50": report["handshake_ms_p50"],
        "handshake_ms_p99": report["handshake_ms_p99"],
        "tls_versions": report["tls_versions"],
        "tls_ciphers": report["tls_ciphers"],
        "tls_server_keys": report["tls_server_keys"],
        "generator_cpu_percent": report["cpu_percent"],
    }
    if scenario.kind == "handshake":
        sessions = int(report["sessions_ok"])
        per = cpu / sessions
        result.update({
            "cpu_ms_per_handshake": round(per * 1e3, 4),
            "handshakes_per_cpu_s": round(1 / per, 1) if per > 0 else None,
            "openssl_ms_per_handshake": reference["server_ms_per_handshake"],
            "vs_openssl_percent": round(100 * reference["server_ms_per_handshake"] / (per * 1e3), 1)
            if per > 0 else None,
            "s_server_ms_per_handshake": s_server["server_ms_per_handshake"],
            "vs_s_server_percent": round(100 * s_server["server_ms_per_handshake"] / (per * 1e3), 1)
            if per > 0 else None,
            "vs_openssl_speed_percent": round(100 / per / ctx.openssl_handshakes_per_cpu_s, 1) if per > 0 else None,
            "openssl_handshake": reference,
            "openssl_s_server": s_server,
            "sessions_per_s": report["sessions_per_s"],
        })
    else:
        result.update({
            "cpu_ms_per_msg": round(cpu / accepted * 1e3, 4),
            "accepted_per_s": report["messages_per_s"],
            "delivered_per_s": round(accepted / (seen - start), 1),
        })
    return result


def warm_up(server, ctx: Context, sessions: int) -> None:
    """A few STARTTLS sessions, not measured, then drained: Postfix forks its
    first smtpd, cleanup and smtp processes, mxgate grows its buffers, both
    open their first connections to the sink; the first scenario then
    measures the steady state like the others."""
    target = ctx.sink.messages() + sessions
    load.run(ctx.smtpload, server.port, ctx.generator_core,
             ["--sessions", "50", "--total", str(sessions), "--tls", "starttls"], timeout=600)
    if ctx.sink.wait_messages(target, 120) is None:
        raise BenchError(f"{server.name} lost messages while warming up\n{server.log_tail()}")


def _settled_cpu(server, window: float = 0.2, cap: float = 2.0) -> float:
    """The server's CPU seconds once it stopped spending any (the last queue
    file removed, the last log line written), at most cap seconds from now."""
    deadline = time.monotonic() + cap
    last = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(window)
        now = server.cpu_seconds()
        if now == last:
            break
        last = now
    return last


def _run_idle(scenario: Scenario, server, ctx: Context) -> dict:
    before = server.memory()

    def while_held(established: int) -> dict:
        at = time.monotonic()
        time.sleep(1.0)  # let the server finish setting up the last sessions
        return {"memory": server.memory(), "at": at}

    started = time.monotonic()
    report, held = load.run_idle(ctx.smtpload, server.port, ctx.generator_core, scenario.idle, scenario.hold,
                                 scenario.ramp, scenario.tls, while_held, timeout=600)
    count = int(report["idle_connections_established"])
    if count != scenario.idle:
        raise BenchError(f"{server.name}: {count} of {scenario.idle} idle connections established")
    mem: procs.Memory = held["memory"]
    return {
        "connections": count,
        "established_s": round(held["at"] - started, 3),
        "pss_kib_before": before.pss_kib,
        "pss_kib_held": mem.pss_kib,
        "rss_kib_before": before.rss_kib,
        "rss_kib_held": mem.rss_kib,
        "processes_before": before.processes,
        "processes_held": mem.processes,
        "pss_kib_per_conn": round((mem.pss_kib - before.pss_kib) / count, 2),
        "rss_kib_per_conn": round((mem.rss_kib - before.rss_kib) / count, 2),
    }
