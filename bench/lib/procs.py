"""Processes: start them pinned to a core, stop them by pid, and read what a
process tree costs in CPU time and memory from /proc.

CPU of a tree: utime + stime + cutime + cstime of the root and of every live
descendant.  A child that exits and is reaped moves its own time (and that of
its reaped children) into its parent's cutime/cstime, so the sum stays
correct across children that come and go (Postfix's smtpd, cleanup, smtp).
Memory of a tree: Pss and Rss from /proc/PID/smaps_rollup, summed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The harness or a server broke (a message lost, a server that did not
    start, a load generator that failed): not a figure, a failed run."""


# --------------------------------------------------------------------------
# /proc


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    session: int
    state: str
    ticks_self: int  # utime + stime
    ticks_children: int  # cutime + cstime (reaped children)


def read_stat(pid: int) -> Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split at the last ')'.
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, session, ..., utime (14), stime, cutime, cstime
    return Stat(pid=pid, ppid=int(fields[1]), session=int(fields[3]), state=fields[0],
                ticks_self=int(fields[11]) + int(fields[12]),
                ticks_children=int(fields[13]) + int(fields[14]))


def scan() -> dict[int, Stat]:
    """Every process of the machine."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                table[stat.pid] = stat
    return table


def tree(root: int, table: dict[int, Stat]) -> list[int]:
    """root and all its descendants present in table."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    out, todo = [], [root] if root in table else []
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of root and its descendants, living and reaped.

    The root is read before and after the scan of its descendants; if its
    cutime/cstime moved in between (a child was reaped while we looked, and
    would be counted twice or not at all) the snapshot is taken again."""
    for _ in range(20):
        before = read_stat(root)
        if before is None:
            raise BenchError(f"process {root} exited while its CPU time was being read")
        table = scan()
        after = read_stat(root)
        if after is not None and after.ticks_children == before.ticks_children:
            table[root] = after
            break
    else:
        raise BenchError(f"could not take a consistent CPU snapshot of process {root}")
    return sum(table[pid].ticks_self + table[pid].ticks_children for pid in tree(root, table)) / CLK_TCK


@dataclass(frozen=True)
class Memory:
    pss_kib: int
    rss_kib: int
    processes: int


def tree_memory(root: int) -> Memory:
    """Pss and Rss (KiB) summed over root and its descendants."""
    pss = rss = count = 0
    for pid in tree(root, scan()):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        count += 1
        for line in text.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                rss += int(line.split()[1])
    return Memory(pss_kib=pss, rss_kib=rss, processes=count)


# --------------------------------------------------------------------------
# Starting and stopping


def pinned(argv: list[str], core: int | None) -> list[str]:
    """argv run under `taskset -c CORE` (taskset execs it: same pid; children inherit)."""
    return argv if core is None else ["taskset", "-c", str(core), *argv]


def spawn(argv: list[str], core: int | None = None, **kw) -> subprocess.Popen:
    """Start a process in its own session (so a Ctrl-C on the terminal reaches
    only the harness, which then stops everything in order)."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(pinned(argv, core), start_new_session=True, **kw)


def terminate(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
    """sig to proc's pid, up to timeout seconds to exit, then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
    return proc.returncode


def kill_remaining(roots: list[int], sessions: set[int]) -> list[int]:
    """SIGKILL every process descending from roots or in one of sessions (by
    pid, never by name); returns the pids killed."""
    table = scan()
    victims: set[int] = set()
    for root in roots:
        victims.update(tree(root, table))
    victims.update(pid for pid, stat in table.items() if stat.session in sessions)
    victims.discard(os.getpid())
    killed = []
    for pid in sorted(victims):
        if table[pid].state == "Z":
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll predicate until it is true (True) or timeout seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def greets(port: int, timeout: float = 2.0) -> bool:
    """True when 127.0.0.1:port answers with a 220 greeting (then QUIT)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                data += chunk
            ok = data.startswith(b"220")
            s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
