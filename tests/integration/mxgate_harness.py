"""Black-box test harness for mxgate: runs the real binary on loopback.

What it gives a test:
  * MxgateServer: a private work dir (certs, config, spool, maildir, log), a
    free loopback port chosen at run time, start/stop/kill/restart, and views
    of the maildir, the spool and the server's log.
  * SmtpClient: a raw-socket SMTP client that sends exact bytes and reads
    replies (multi-line aware, every read bounded by a timeout).
  * Helpers to build messages, parse delivered maildir files and produce a
    real TLS ClientHello.

Promises: every wait has a deadline; every server started through
start_server() is stopped (SIGTERM, then SIGKILL) and its work dir removed in
the test's cleanup, and an atexit hook kills anything still running.  Only
127.0.0.1 / ::1 are ever bound or connected to.

Environment: MXGATE_BINARY (the built mxgate) and MXGATE_SOURCE_DIR (the repo
root); both default to this checkout (build/mxgate) for manual runs.
"""

from __future__ import annotations

import atexit
import email.utils
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Iterable

SOURCE_DIR = Path(os.environ.get("MXGATE_SOURCE_DIR") or Path(__file__).resolve().parents[2])
BINARY = Path(os.environ.get("MXGATE_BINARY") or SOURCE_DIR / "build" / "mxgate")
HOSTNAME = "mx.example.test"
CLIENT_HELO = "client.example.test"

# Generous bounds: they only matter when something is broken.
START_TIMEOUT = 20.0
REPLY_TIMEOUT = 15.0
DELIVERY_TIMEOUT = 30.0

GREETING = f"220 {HOSTNAME} ESMTP mxgate"
EHLO_KEYWORDS = ["PIPELINING", "SIZE 36700160", "STARTTLS", "8BITMIME",
                 "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"]


# --------------------------------------------------------------------------
# Certificates and ports


_certs_lock = threading.Lock()
_certs_dir: Path | None = None


def certs_dir() -> Path:
    """The test certificates, made once per test process by scripts/make-certs."""
    global _certs_dir
    with _certs_lock:
        if _certs_dir is None:
            path = Path(tempfile.mkdtemp(prefix="mxgate-certs-"))
            atexit.register(shutil.rmtree, path, True)
            env = dict(os.environ, MXGATE_HOSTNAME=HOSTNAME)
            subprocess.run(["bash", str(SOURCE_DIR / "scripts" / "make-certs"), str(path)],
                           check=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
            _certs_dir = path
        return _certs_dir


def cert_der(name: str) -> bytes:
    """DER bytes of certs_dir()/NAME.pem ("ecdsa" or "rsa"), to compare with a peer cert."""
    return ssl.PEM_cert_to_DER_cert((certs_dir() / f"{name}.pem").read_text())


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, read it, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def client_tls_context(verify: bool = True, check_hostname: bool = True, **kw) -> ssl.SSLContext:
    """A client context; with verify it trusts exactly the two test certificates.
    smtplib passes the IP as server name, so it needs check_hostname=False."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile=str(certs_dir() / "ecdsa.pem"))
        ctx.load_verify_locations(cafile=str(certs_dir() / "rsa.pem"))
        ctx.check_hostname = check_hostname
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if "minimum_version" in kw:
        ctx.minimum_version = kw["minimum_version"]
    if "maximum_version" in kw:
        ctx.maximum_version = kw["maximum_version"]
    if "ciphers" in kw:
        ctx.set_ciphers(kw["ciphers"])
    return ctx


def tls_client_hello() -> bytes:
    """The bytes of a real TLS ClientHello, as a client would send them."""
    ctx = client_tls_context(verify=False)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=HOSTNAME)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:16]
    return hello


# --------------------------------------------------------------------------
# Config rendering


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))  # JSON escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r} as TOML")


def render_toml(config: dict) -> str:
    """Scalars at top level, dicts as [tables], lists of dicts as [[arrays of tables]]."""
    out: list[str] = []
    tables = []
    for key, value in config.items():
        if isinstance(value, dict):
            tables.append((key, value, False))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value) \
                and key == "listener":
            tables.append((key, value, True))
        else:
            out.append(f"{key} = {_toml_value(value)}")
    for key, value, is_array in tables:
        for entry in (value if is_array else [value]):
            out.append("")
            out.append(f"[[{key}]]" if is_array else f"[{key}]")
            for k, v in entry.items():
                out.append(f"{k} = {_toml_value(v)}")
    return "\n".join(out) + "\n"


def merge(base: dict, overrides: dict) -> dict:
    """Deep merge; a None value in overrides deletes the key."""
    result = dict(base)
    for key, value in overrides.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


# --------------------------------------------------------------------------
# SMTP client


class ReplyTimeout(AssertionError):
    pass


class ConnectionClosed(AssertionError):
    pass


class Reply:
    """One SMTP reply: code and the text of each line (without "250-")."""

    def __init__(self, code: int, lines: list[str]):
        self.code = code
        self.lines = lines

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def first(self) -> str:
        """The first line as sent, e.g. "250 2.1.0 Ok"."""
        return f"{self.code} {self.lines[0]}"

    def __str__(self) -> str:
        return " | ".join(f"{self.code} {line}" for line in self.lines)

    __repr__ = __str__


_REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -])(.*)$", re.S)


class SmtpClient:
    """Raw SMTP over a socket: send exact bytes, read replies with deadlines."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = REPLY_TIMEOUT,
                 implicit_tls: bool = False, context: ssl.SSLContext | None = None,
                 connect: bool = True):
        assert host in ("127.0.0.1", "::1", "localhost"), host
        self.host, self.port, self.timeout = host, port, timeout
        self.buffer = b""
        self.sock: socket.socket | None = None
        if connect:
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if implicit_tls:
                self.sock = (context or client_tls_context()).wrap_socket(
                    self.sock, server_hostname=HOSTNAME)

    # ---- context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # ---- raw I/O
    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return b""
        except ssl.SSLError as e:
            if "EOF" in str(e) or "reset" in str(e).lower():
                return b""
            raise
        return data

    def read_line(self, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\r\n" not in self.buffer:
            try:
                data = self._recv(deadline)
            except socket.timeout:
                raise ReplyTimeout(f"no complete reply line within the timeout; got {self.buffer!r}")
            if not data:
                raise ConnectionClosed(f"connection closed; unparsed bytes {self.buffer!r}")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def read_reply(self, timeout: float | None = None) -> Reply:
        """One complete (possibly multi-line) reply."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        code = None
        lines: list[str] = []
        while True:
            raw = self.read_line(max(0.0, deadline - time.monotonic()))
            m = _REPLY_LINE.match(raw)
            if not m:
                raise AssertionError(f"malformed reply line {raw!r}")
            this_code = int(m.group(1))
            if code is not None and this_code != code:
                raise AssertionError(f"code changed inside a multi-line reply: {raw!r}")
            code = this_code
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return Reply(code, lines)

    def read_replies(self, count: int, timeout: float | None = None) -> list[Reply]:
        return [self.read_reply(timeout) for _ in range(count)]

    def command(self, line: str | bytes, timeout: float | None = None) -> Reply:
        """Sends LINE + CRLF and returns its reply."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read_reply(timeout)

    def read_available(self, timeout: float) -> bytes:
        """Whatever arrives within TIMEOUT (b"" if nothing); stops early at EOF."""
        deadline = time.monotonic() + timeout
        got = self.buffer
        self.buffer = b""
        while True:
            try:
                data = self._recv(deadline)
            except socket.timeout:
                return got
            if not data:
                return got
            got += data

    def wait_closed(self, timeout: float = REPLY_TIMEOUT) -> bool:
        """True when the server closes the connection within TIMEOUT (any data is kept)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self._recv(deadline)
            except socket.timeout:
                return False
            except OSError:
                return True
            if not data:
                return True
            self.buffer += data

    # ---- SMTP conveniences
    def greeting(self) -> Reply:
        return self.read_reply()

    def ehlo(self, name: str = CLIENT_HELO) -> Reply:
        return self.command(f"EHLO {name}")

    def starttls(self, context: ssl.SSLContext | None = None) -> Reply:
        reply = self.command("STARTTLS")
        if reply.code != 220:
            return reply
        assert self.buffer == b"", f"bytes after the STARTTLS reply in cleartext: {self.buffer!r}"
        self.sock.settimeout(self.timeout)
        self.sock = (context or client_tls_context()).wrap_socket(self.sock, server_hostname=HOSTNAME)
        return reply

    def send_message(self, mail_from: str, rcpts: Iterable[str], content: bytes,
                     mail_params: str = "") -> Reply:
        """MAIL/RCPT/DATA with dot-stuffing; asserts each step; returns the final reply."""
        params = f" {mail_params}" if mail_params else ""
        r = self.command(f"MAIL FROM:<{mail_from}>{params}")
        assert r.code == 250, f"MAIL: {r}"
        for rcpt in rcpts:
            r = self.command(f"RCPT TO:<{rcpt}>")
            assert r.code == 250, f"RCPT: {r}"
        r = self.command("DATA")
        assert r.code == 354, f"DATA: {r}"
        self.send(dot_stuff(content) + b".\r\n")
        return self.read_reply()

    @property
    def tls_version(self) -> str | None:
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None


def dot_stuff(content: bytes) -> bytes:
    """CRLF-terminated content ready to send after DATA (without the final ".")."""
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    lines = content.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$")


def queue_id(reply: Reply) -> str:
    m = QUEUED.match(reply.lines[-1]) if reply.code == 250 else None
    assert m, f"expected '250 2.0.0 Ok: queued as <ID>', got {reply}"
    return m.group(1)


def make_message(subject: str = "test", body: str = "Hello.", message_id: str | None = None,
                 sender: str = "sender@client.example.test", rcpt: str = "rcpt@example.test",
                 extra_headers: str = "") -> bytes:
    """A small RFC 5322 message with CRLF line ends and a unique Message-ID."""
    mid = message_id or email.utils.make_msgid(domain="client.example.test")
    text = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"Message-ID: {mid}\r\n{extra_headers}\r\n{body}")
    if not text.endswith("\r\n"):
        text += "\r\n"
    return text.encode()


# --------------------------------------------------------------------------
# Delivered messages


class Delivered:
    """A maildir file split into the headers mxgate added and the message as sent."""

    def __init__(self, path: Path):
        self.path = path
        self.raw = path.read_bytes()
        lines = self.raw.split(b"\n")
        self.return_path = None
        self.delivered_to: list[str] = []  # addresses without <>
        self.received = None  # unfolded text of mxgate's Received header
        self.received_raw = None
        i = 0
        if lines and lines[0].startswith(b"Return-Path:"):
            self.return_path = lines[0][len(b"Return-Path:"):].strip().decode("utf-8", "replace")
            i = 1
        while i < len(lines) and lines[i].startswith(b"Delivered-To:"):
            # Bare address (the usual form); angle brackets are tolerated and removed.
            addr = lines[i][len(b"Delivered-To:"):].strip().decode("utf-8", "replace")
            if addr.startswith("<") and addr.endswith(">"):
                addr = addr[1:-1]
            self.delivered_to.append(addr)
            i += 1
        if i < len(lines) and lines[i].startswith(b"Received:"):
            start = i
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            self.received_raw = b"\n".join(lines[start:i]).decode("utf-8", "replace")
            self.received = re.sub(r"\n[ \t]+", " ", self.received_raw)
        # The content filter's fields, right below the Received field
        # (Authentication-Results only for mail from outside relay_networks).
        self.filter_headers: dict[str, str] = {}
        while i < len(lines) and re.match(
                rb"(Authentication-Results|X-mxgate-Verdict|X-Spam-Flag|X-Spam-Score|X-Spam-Status):", lines[i]):
            start = i
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            field = re.sub(r"\r?\n[ \t]+", " ", b"\n".join(lines[start:i]).decode("utf-8", "replace"))
            name, _, value = field.partition(":")
            self.filter_headers[name] = value.strip()
        self.content = b"\n".join(lines[i:])  # the message as the client sent it, LF line ends

    def __repr__(self) -> str:
        return f"Delivered({self.path.name}, {self.raw[:200]!r})"


def lf(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"\n")


# --------------------------------------------------------------------------
# The server under test


_live_servers: set["MxgateServer"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live_servers):
        server.kill()


class MxgateServer:
    """One mxgate process with its own work dir.  Restartable on the same dir."""

    def __init__(self, config: dict | None = None, workdir: Path | None = None,
                 raw_config: str | None = None):
        self.owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mxgate-it-"))
        self.overrides = config or {}
        self.raw_config = raw_config
        self.config_path = self.workdir / "mxgate.toml"
        self.log_path = self.workdir / "mxgate.log"
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.killed = False
        self.listeners: list[dict] = []
        certs = self.workdir / "certs"
        if not certs.exists():
            certs.mkdir()
            for name in ("ecdsa.pem", "ecdsa.key", "rsa.pem", "rsa.key"):
                shutil.copy2(certs_dir() / name, certs / name)

    # ---- config
    def build_config(self) -> dict:
        base = {
            "hostname": HOSTNAME,
            "spool": "spool",
            "tls": {
                "certificates": [{"cert": "certs/ecdsa.pem", "key": "certs/ecdsa.key"},
                                 {"cert": "certs/rsa.pem", "key": "certs/rsa.key"}],
                "min_version": "TLSv1.2",
            },
            "timeouts": {"command": 60, "data": 60, "tls_handshake": 30, "shutdown": 5},
            "delivery": {"maildir": "mail"},
        }
        overrides = dict(self.overrides)
        listeners = overrides.pop("listener", [{}])
        config = merge(base, overrides)
        self.listeners = []
        for entry in listeners:
            entry = dict(entry)
            host = entry.pop("host", "127.0.0.1")
            port = entry.pop("port", None) or free_port(host)
            entry.setdefault("address", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            entry.setdefault("tls", "may")
            self.listeners.append({"host": host, "port": port, "tls": entry["tls"]})
            config.setdefault("listener", []).append(entry)
        return config

    def write_config(self) -> None:
        text = self.raw_config if self.raw_config is not None else render_toml(self.build_config())
        self.config_path.write_text(text)

    # ---- paths
    @property
    def port(self) -> int:
        return self.listeners[0]["port"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def maildir(self) -> Path:
        return self.workdir / "mail"

    @property
    def spool(self) -> Path:
        return self.workdir / "spool"

    # ---- process control
    def start(self, timeout: float = START_TIMEOUT, attempts: int = 3) -> "MxgateServer":
        assert BINARY.exists(), f"mxgate binary not found at {BINARY} (set MXGATE_BINARY)"
        for attempt in range(attempts):
            self.write_config()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [str(BINARY), "serve", "--config", str(self.config_path)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                    start_new_session=True)
            _live_servers.add(self)
            self.returncode = None
            self.killed = False
            try:
                self._wait_ready(timeout)
                return self
            except AssertionError:
                self.kill()
                tail = self.log_text()[log_offset:]
                in_use = "in use" in tail.lower() or "EADDRINUSE" in tail
                if in_use and attempt + 1 < attempts and self.raw_config is None:
                    continue  # another process took our port between probe and bind
                raise AssertionError(f"mxgate did not come up (exit {self.returncode}); log:\n{tail}")
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for listener in self.listeners:
            while True:
                if self.proc.poll() is not None:
                    self.returncode = self.proc.returncode
                    raise AssertionError(f"mxgate exited with {self.proc.returncode} during start")
                if time.monotonic() > deadline:
                    raise AssertionError("mxgate did not greet within the start timeout")
                try:
                    with self.client(listener=listener, timeout=max(0.5, deadline - time.monotonic())) as c:
                        reply = c.greeting()
                        if reply.code != 220:
                            raise AssertionError(f"greeting during start: {reply}")
                        c.send(b"QUIT\r\n")
                        c.wait_closed(5)
                    break
                except (ConnectionRefusedError, ConnectionResetError, socket.timeout, ssl.SSLError,
                        ConnectionClosed, ReplyTimeout):
                    time.sleep(0.05)

    def client(self, listener: int | dict = 0, **kw) -> SmtpClient:
        entry = self.listeners[listener] if isinstance(listener, int) else listener
        if entry["tls"] == "implicit":
            kw.setdefault("implicit_tls", True)
        return SmtpClient(entry["port"], host=entry["host"], **kw)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        _live_servers.discard(self)
        return self.returncode

    def stop(self, timeout: float = 45.0) -> int:
        """SIGTERM and wait; SIGKILL after TIMEOUT (then self.killed is True)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                self.kill()
        self.returncode = self.proc.wait()
        _live_servers.discard(self)
        return self.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.returncode = self.proc.returncode
        _live_servers.discard(self)

    def close(self) -> None:
        """Stops the process and removes the work dir."""
        self.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- observations
    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = REPLY_TIMEOUT, start: int = 0) -> re.Match:
        """The first match of regex PATTERN in the log after offset START."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), start)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"log never matched {pattern!r}; log:\n{self.log_text()[start:][-4000:]}")
            time.sleep(0.05)

    def maildir_files(self) -> list[Path]:
        files = []
        for sub in ("new", "cur"):
            d = self.maildir / sub
            if d.is_dir():
                files.extend(p for p in d.iterdir() if p.is_file())
        return sorted(files)

    def messages(self) -> list[Delivered]:
        return [Delivered(p) for p in self.maildir_files()]

    def wait_for_messages(self, count: int, timeout: float = DELIVERY_TIMEOUT) -> list[Delivered]:
        """Waits until at least COUNT files are in the maildir; returns all of them."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.maildir_files()
            if len(files) >= count:
                time.sleep(0.05)  # let a file being renamed settle (rename is atomic anyway)
                return self.messages()
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} delivered messages, found {len(files)}; "
                                     f"spool: {self.spool_files()}; log:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def spool_files(self) -> list[Path]:
        """Every file that holds (part of) a message or its delivery state; not
        the running gateway's pid file."""
        if not self.spool.is_dir():
            return []
        return sorted(p for p in self.spool.rglob("*") if p.is_file() and p.name != "mxgate.pid")

    def wait_spool_empty(self, timeout: float = DELIVERY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.spool_files():
            if time.monotonic() > deadline:
                raise AssertionError(f"spool still holds {self.spool_files()}")
            time.sleep(0.05)

    def assert_nothing_stored(self, testcase: unittest.TestCase, settle: float = 1.0) -> None:
        """Neither spool nor maildir holds a message, also after SETTLE seconds."""
        time.sleep(settle)
        testcase.assertEqual(self.maildir_files(), [], "a message was delivered")
        queued = [p for p in self.spool_files()]
        testcase.assertEqual(queued, [], "a message was spooled")


def start_server(testcase: unittest.TestCase, config: dict | None = None, **kw) -> MxgateServer:
    """Starts a server for TESTCASE and registers its cleanup."""
    server = MxgateServer(config, **kw)
    testcase.addCleanup(server.close)
    server.start()
    return server


def session(server: MxgateServer, ehlo: str | None = CLIENT_HELO, **kw) -> SmtpClient:
    """A connected client that has read the greeting (and sent EHLO when EHLO is set)."""
    c = server.client(**kw)
    r = c.greeting()
    assert r.code == 220, f"greeting: {r}"
    if ehlo:
        r = c.ehlo(ehlo)
        assert r.code == 250, f"EHLO: {r}"
    return c


def run(args: list[str], timeout: float = 60.0, input: bytes | None = None,
        **kw) -> subprocess.CompletedProcess:
    """subprocess.run with captured output and a bound."""
    return subprocess.run(args, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, **kw)


RECEIVED = re.compile(
    r"^Received: from (?P<helo>\S+) \(\[(?P<ip>[0-9a-fA-F:.]+)\]\)"
    r" by (?P<host>\S+) \(mxgate\) with (?P<proto>\S+) id (?P<id>[0-9A-Za-z]+)"
    r"(?: \(using (?P<tlsver>\S+) with cipher (?P<cipher>\S+) \((?P<bits>\d+)/(?P<algbits>\d+) bits\)\))?"
    r"(?: for <(?P<rcpt>[^>]*)>)? ?; (?P<date>.+)$")


def parse_received(delivered: Delivered) -> re.Match:
    assert delivered.received, f"no Received header first: {delivered.raw[:400]!r}"
    m = RECEIVED.match(delivered.received)
    assert m, f"Received header not in the expected form: {delivered.received_raw!r}"
    assert email.utils.parsedate_to_datetime(m.group("date")) is not None, m.group("date")
    return m

