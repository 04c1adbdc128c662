"""DNS test bed: real DNSSEC-signed zones served by a real nsd on loopback.

What it gives a test:
  * DnsBed: in a work dir, writes one zone file per zone, signs the signed ones
    with ldns-keygen / ldns-signzone (ECDSAP256SHA256, algorithm 13, one KSK
    and one ZSK per zone), optionally tampers with a signed zone after signing
    (so validation fails: bogus), and serves them all with one `nsd -d` on
    127.0.0.1 at a port chosen free at run time.
  * Each signed zone is its own trust anchor: .trust_anchors lists the DS RR of
    every signed zone (unless its spec says "trust_anchor": False).  No parent
    zone is served; an unsigned zone is under no anchor, so a validator calls
    it insecure.
  * .stub_zones, .toml() (the [dns] section of an mxgate config) and
    .unbound_conf() (for unbound-host / libunbound) point a resolver at it.

Zones: a dict zone name -> spec, spec keys:
    "signed":       bool (default True)
    "records":      zone file lines, $ORIGIN is the zone so "@" and relative
                    names work ("@ MX 10 mx", "mx A 127.0.0.2",
                    "_25._tcp.mx TLSA 3 1 1 <hex>").  SOA and NS (ns.<zone>,
                    127.0.0.1) are added by the bed.
    "tamper":       (old, new) or a list of them, applied to the signed zone:
                    in the first line whose whitespace-collapsed text contains
                    old, old is replaced by new (e.g. ("IN A 127.0.0.1",
                    "IN A 127.0.0.66")).  A pair that matches no line raises.
    "trust_anchor": bool (default: signed); False serves a signed zone that no
                    anchor covers (so it validates as insecure).
default_zones(...) builds the standard set: dane-ok.test, dane-bad.test,
bogus.test, insecure.test, nullmx.test (see its docstring).

Promises: every wait is bounded; stop() (also run by the context manager and
an atexit hook) terminates nsd and waits for it.  Only 127.0.0.1 is bound or
queried.  Needs the Debian packages nsd, ldnsutils and openssl.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

TTL = 300
START_TIMEOUT = 15.0
TOOL_TIMEOUT = 60.0

_running: set["DnsBed"] = set()


@atexit.register
def _stop_leftovers() -> None:
    for bed in list(_running):
        bed.stop()


def spki_sha256(cert_path: str | os.PathLike) -> str:
    """Hex SHA-256 of the certificate's DER SubjectPublicKeyInfo (TLSA x 1 1)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-pubkey", "-noout"],
                         check=True, capture_output=True, timeout=TOOL_TIMEOUT).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True, timeout=TOOL_TIMEOUT).stdout
    return hashlib.sha256(der).hexdigest()


def default_zones(cert_path: str | os.PathLike | None = None, smtp_port: int = 25,
                  mx_address: str = "127.0.0.1") -> dict[str, dict]:
    """The standard zones:
      dane-ok.test   signed;  MX 10 mx, mx A mx_address, _PORT._tcp.mx TLSA 3 1 1
                     <SPKI SHA-256 of cert_path>
      dane-bad.test  signed;  the same with a wrong TLSA digest
      bogus.test     signed;  MX 10 mx and mx A, both altered after signing
      insecure.test  unsigned, no trust anchor;  MX 10 mx, mx A
      nullmx.test    signed;  MX 0 . (RFC 7505)
    Without cert_path the "right" digest is that of the text "no certificate"."""
    good = spki_sha256(cert_path) if cert_path else hashlib.sha256(b"no certificate").hexdigest()
    bad = hashlib.sha256(b"not the certificate: " + good.encode()).hexdigest()
    if bad == good:  # pragma: no cover - cannot happen, but a test bed must not lie
        raise AssertionError("digests collide")

    def mail_zone(digest: str | None) -> list[str]:
        lines = ["@ MX 10 mx", f"mx A {mx_address}"]
        if digest:
            lines.append(f"_{smtp_port}._tcp.mx TLSA 3 1 1 {digest}")
        return lines

    return {
        "dane-ok.test": {"signed": True, "records": mail_zone(good)},
        "dane-bad.test": {"signed": True, "records": mail_zone(bad)},
        "bogus.test": {
            "signed": True,
            "records": mail_zone(good),
            "tamper": [(f"IN A {mx_address}", "IN A 127.0.0.66"),
                       ("IN MX 10 mx.bogus.test.", "IN MX 20 mx.bogus.test.")],
        },
        "insecure.test": {"signed": False, "records": mail_zone(None)},
        "nullmx.test": {"signed": True, "records": ["@ MX 0 ."]},
    }


def free_port() -> int:
    """A port free a moment ago on 127.0.0.1 for both UDP and TCP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def udp_query(port: int, name: str, qtype: int, timeout: float = 1.0) -> bytes | None:
    """One plain UDP query (RD off) to 127.0.0.1:port; the reply or None."""
    qid = random.randrange(1 << 16)
    packet = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, ("127.0.0.1", port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data, _ = s.recvfrom(65535)
                if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
                    return data
        except OSError:  # timeout, or ICMP port unreachable before nsd binds
            return None
    return None


def nodefault_zones(zones: Iterable[str]) -> list[str]:
    """Each zone and all its ancestors: unbound answers special-use names (test.,
    invalid., home.arpa., ...) itself unless told `local-zone: NAME nodefault`
    for exactly that default zone; nodefault on a name with no default is a no-op."""
    out: set[str] = set()
    for zone in zones:
        labels = zone.rstrip(".").split(".")
        out.update(".".join(labels[i:]) for i in range(len(labels)))
    return sorted(out)


def _session_members(sid: int, running_only: bool) -> list[tuple[int, int, str]]:
    """(pid, ppid, state) of the processes in session sid."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp session ...
        if int(fields[3]) == sid and not (running_only and fields[0] == "Z"):
            out.append((int(entry.name), int(fields[1]), fields[0]))
    return out


def _become_subreaper() -> None:
    """nsd's main process exits before its server child; the orphan goes to
    the nearest subreaper, else to PID 1, which in a container may never reap
    it.  As subreaper this process reaps them itself (by pid, so it never
    takes another child's status from subprocess)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _collapse(text: str) -> str:
    return " ".join(text.split())


class DnsBed:
    def __init__(self, workdir: str | os.PathLike | None = None, zones: dict[str, dict] | None = None,
                 cert_path: str | os.PathLike | None = None, smtp_port: int = 25,
                 mx_address: str = "127.0.0.1"):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mxgate-dnsbed-"))
        self.zones = zones if zones is not None else default_zones(cert_path, smtp_port, mx_address)
        self.port = 0
        self.trust_anchors: list[str] = []
        self.dnskeys: dict[str, list[str]] = {}
        self._proc: subprocess.Popen | None = None
        self._session = 0
        self._log = None

    # ---------------------------------------------------------------- setup

    def _zone_text(self, name: str, spec: dict) -> str:
        head = [
            f"$ORIGIN {name}.",
            f"$TTL {TTL}",
            f"@ IN SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 {TTL}",
            f"@ IN NS ns.{name}.",
            "ns IN A 127.0.0.1",
        ]
        return "\n".join(head + list(spec.get("records", []))) + "\n"

    def _sign(self, name: str, zone_file: Path) -> Path:
        zdir = zone_file.parent
        ksk = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", name], zdir).strip()
        zsk = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", name], zdir).strip()
        ds = (zdir / f"{ksk}.ds").read_text().strip()
        self.dnskeys[name] = [(zdir / f"{k}.key").read_text().split(";")[0].strip() for k in (ksk, zsk)]
        now = int(time.time())
        signed = zdir / f"{name}.zone.signed"
        _run(["ldns-signzone", "-i", str(now - 3600), "-e", str(now + 30 * 86400), "-o", name,
              "-f", str(signed), str(zone_file), ksk, zsk], zdir)
        if self.zones[name].get("trust_anchor", True):
            self.trust_anchors.append(_collapse(ds))
        return signed

    @staticmethod
    def _tamper(path: Path, pairs: Iterable[tuple[str, str]]) -> None:
        lines = path.read_text().splitlines()
        for old, new in pairs:
            old_c, new_c = _collapse(old), _collapse(new)
            for i, line in enumerate(lines):
                if old_c in _collapse(line):
                    lines[i] = _collapse(line).replace(old_c, new_c, 1)
                    break
            else:
                raise ValueError(f"tamper: no line of {path.name} contains {old!r}:\n" + "\n".join(lines))
        path.write_text("\n".join(lines) + "\n")

    def _write_conf(self) -> Path:
        w = self.workdir
        conf = [
            "server:",
            f"  ip-address: 127.0.0.1@{self.port}",
            f"  port: {self.port}",
            "  do-ip4: yes",
            "  do-ip6: no",
            "  server-count: 1",
            '  username: ""',
            '  chroot: ""',
            '  database: ""',
            f'  zonesdir: "{w / "zones"}"',
            f'  zonelistfile: "{w / "zone.list"}"',
            f'  xfrdfile: "{w / "xfrd.state"}"',
            f'  xfrdir: "{w / "xfr"}"',
            f'  pidfile: "{w / "nsd.pid"}"',
            f'  logfile: "{w / "nsd.log"}"',
            "  verbosity: 1",
            "  hide-version: yes",
            "remote-control:",
            "  control-enable: no",
        ]
        for name, path in self._zone_files.items():
            conf += ["zone:", f"  name: {name}", f'  zonefile: "{path}"']
        path = w / "nsd.conf"
        path.write_text("\n".join(conf) + "\n")
        return path

    def start(self, attempts: int = 3) -> "DnsBed":
        zones_dir = self.workdir / "zones"
        zones_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "xfr").mkdir(exist_ok=True)
        self.trust_anchors = []
        self._zone_files: dict[str, Path] = {}
        for name, spec in self.zones.items():
            zdir = zones_dir / name
            zdir.mkdir(exist_ok=True)
            zone_file = zdir / f"{name}.zone"
            zone_file.write_text(self._zone_text(name, spec))
            served = self._sign(name, zone_file) if spec.get("signed", True) else zone_file
            tamper = spec.get("tamper")
            if tamper:
                self._tamper(served, [tamper] if isinstance(tamper[0], str) else tamper)
            self._zone_files[name] = served
        last_error = ""
        for _ in range(attempts):
            self.port = free_port()
            conf = self._write_conf()
            _run(["nsd-checkconf", str(conf)], self.workdir)
            try:
                self._spawn(conf)
                _running.add(self)
                return self
            except RuntimeError as e:
                last_error = str(e)
                self.stop()
        raise RuntimeError(f"nsd did not start after {attempts} attempts:\n{last_error}")

    def _spawn(self, conf: Path) -> None:
        _become_subreaper()
        self._log = open(self.workdir / "nsd.out", "wb")
        self._proc = subprocess.Popen(["nsd", "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._session = self._proc.pid
        waiting = list(self._zone_files)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nsd exited with {self._proc.returncode}:\n{self.log_text()}")
            reply = udp_query(self.port, waiting[0], 6, timeout=0.3)  # SOA
            # An authoritative NOERROR answer: the zone is loaded, not just the socket open.
            if reply and (reply[3] & 0x0F) == 0 and (reply[2] & 0x04):
                waiting.pop(0)
                if not waiting:
                    return
                continue
            time.sleep(0.05)
        raise RuntimeError(f"nsd did not serve {waiting[0]} within {START_TIMEOUT} s:\n{self.log_text()}")

    # ---------------------------------------------------------------- teardown

    def stop(self) -> None:
        """Ends nsd cleanly: with -d the process started becomes xfrd and forks
        "main" (its pid in the pidfile), which forks the server.  SIGTERM to
        main makes it reap its server and tell xfrd to quit; killing the group
        instead would orphan the server as a zombie nobody reaps."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            main_pid = self._main_pid()
            try:
                os.kill(main_pid if main_pid else proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if proc is not None:
            self._wait_group_gone(proc.pid)
        if self._log is not None:
            self._log.close()
            self._log = None
        _running.discard(self)

    def _main_pid(self) -> int | None:
        """nsd's main process, from the pidfile, if it is in the bed's session."""
        try:
            pid = int((self.workdir / "nsd.pid").read_text().split()[0])
            if os.getsid(pid) == self._session:  # not a stale file, not a stranger
                return pid
        except (OSError, ValueError, IndexError):
            pass
        return None

    def _wait_group_gone(self, sid: int, timeout: float = 10.0) -> None:
        """Waits until no process of nsd's session runs (SIGKILL after timeout),
        then reaps the ones that were orphaned to this process (see
        _become_subreaper)."""
        deadline = time.monotonic() + timeout
        while _session_members(sid, running_only=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _session_members(sid, running_only=True):
            try:
                os.killpg(sid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members = _session_members(sid, running_only=False)
            mine = [pid for pid, ppid, _ in members if ppid == os.getpid()]
            for pid in mine:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            if not members or (not mine and all(state == "Z" for _, _, state in members)):
                return  # gone, or only zombies that another parent must reap
            time.sleep(0.02)

    def close(self) -> None:
        """stop(), and remove the work dir if the bed made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "DnsBed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def log_text(self) -> str:
        parts = []
        for name in ("nsd.out", "nsd.log"):
            p = self.workdir / name
            if p.exists():
                parts.append(p.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    # ---------------------------------------------------------------- pointing a resolver at it

    @property
    def address(self) -> str:
        return f"127.0.0.1@{self.port}"

    @property
    def stub_zones(self) -> list[tuple[str, str]]:
        return [(name, self.address) for name in self.zones]

    def toml(self) -> str:
        """The [dns] section of an mxgate config for this bed."""
        out = ["[dns]", "trust_anchor_files = []"]
        for name, addr in self.stub_zones:
            out += ["", "[[dns.stub_zone]]", f"name = {json.dumps(name)}", f"addresses = [{json.dumps(addr)}]"]
        for rr in self.trust_anchors:
            out += ["", "[[dns.trust_anchor]]", f"rr = {json.dumps(rr)}"]
        return "\n".join(out) + "\n"

    def unbound_conf(self, path: str | os.PathLike | None = None) -> Path:
        """An unbound.conf (for unbound-host -C) with the stubs and anchors."""
        path = Path(path) if path else self.workdir / "unbound.conf"
        lines = ["server:", "  do-not-query-localhost: no", '  username: ""', '  chroot: ""']
        lines += [f'  local-zone: "{name}." nodefault' for name in nodefault_zones(self.zones)]
        lines += [f'  trust-anchor: "{rr}"' for rr in self.trust_anchors]
        for name, addr in self.stub_zones:
            lines += ["stub-zone:", f'  name: "{name}"', f"  stub-addr: {addr}"]
        path.write_text("\n".join(lines) + "\n")
        return path
