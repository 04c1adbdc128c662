"""clamd test bed: a real clamd (ClamAV's daemon) with a tiny signature database
the bed writes itself, on a Unix socket in a work dir.

What it gives a test:
  * ClamdBed(tmpdir, max_stream=...): in tmpdir (a fresh temp dir when None)
    writes clamd.conf and the database, starts /usr/sbin/clamd in the
    foreground, and waits (at most START_TIMEOUT) until it answers PING.
    .socket_path, .endpoint ("unix:/...", the form of mxgate's [filter]
    clamd), .filter_toml() (the [filter] lines clamd and clamd_max_stream),
    .log_text(), .start_seconds (fork to first PONG; about 0.1 s with this
    database), and with tcp=True also .port / .tcp_endpoint on 127.0.0.1 at a
    port chosen free at run time.
  * The database: test.ndb matches the EICAR test string anywhere in a stream,
    also inside mail and archives that clamd unpacks; test.hdb is the one line
    ClamAV's own tests use for the clamav-testfiles package (the MD5 of its
    544-byte clam.exe, which every file there contains or packs).  clamd
    reports the names with ".UNOFFICIAL" appended (any unsigned database):
    EICAR_SIGNATURE and TESTFILE_SIGNATURE.  The EICAR string is joined at run
    time from two halves (eicar()), so no file of the repository holds it.
  * max_stream is clamd's StreamMaxLength: an INSTREAM of exactly max_stream
    bytes is scanned, one byte more is answered "INSTREAM size limit
    exceeded. ERROR" (and clamd hangs up).
  * .instream(data) and .ping() speak the protocol of clamd(8) ("INSTREAM",
    "PING") for tests that want a verdict without mxgate.

Promises: every wait is bounded; stop() (also run by the context manager and
an atexit hook) ends clamd (SIGTERM, SIGKILL to its session after
STOP_TIMEOUT) and waits for it; close() also removes the work dir if the bed
made it.  Only a Unix socket in the work dir (and 127.0.0.1 with tcp=True) is
bound.  The packaged clamav-daemon service is never touched.  Needs the
Debian packages clamav-daemon (clamav-testfiles for TESTFILE_SIGNATURE).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

CLAMD = "/usr/sbin/clamd"
TESTFILES = Path("/usr/share/clamav-testfiles")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 30.0

EICAR_SIGNATURE = "Eicar-Signature.UNOFFICIAL"
TESTFILE_SIGNATURE = "ClamAV-Test-File.UNOFFICIAL"
TESTFILE_MD5_LINE = "aa15bcf478d165efd2065190eb473bcb:544:ClamAV-Test-File"

_running: set["ClamdBed"] = set()


@atexit.register
def _stop_leftovers() -> None:
    for bed in list(_running):
        bed.stop()


def eicar() -> bytes:
    """The 68-byte EICAR anti-virus test string, joined from two halves."""
    halves = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
    return "".join(halves).encode("ascii")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Sends request, then reads one NUL-terminated reply (without its NUL).
    clamd may answer and hang up before the request is all sent (its size
    limit): the reply is read then too.  b"" when there is none."""
    try:
        sock.sendall(request)
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = b""
    try:
        while b"\0" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    except ConnectionResetError:
        pass
    return reply.split(b"\0", 1)[0]


def instream_request(data: bytes, chunk: int = 64 * 1024) -> bytes:
    """zINSTREAM: the command, 4-byte big-endian length-prefixed chunks, a zero-length chunk."""
    parts = [b"zINSTREAM\0"]
    for at in range(0, len(data), chunk):
        piece = data[at:at + chunk]
        parts += [struct.pack(">I", len(piece)), piece]
    parts.append(struct.pack(">I", 0))
    return b"".join(parts)


class ClamdBed:
    def __init__(self, tmpdir: str | os.PathLike | None = None, max_stream: int = 1 << 20,
                 tcp: bool = False):
        self._own_workdir = tmpdir is None
        self.workdir = Path(tmpdir) if tmpdir else Path(tempfile.mkdtemp(prefix="mxgate-clamdbed-"))
        self.max_stream = max_stream
        self.tcp = tcp
        self.port = 0
        self.start_seconds = 0.0
        self._proc: subprocess.Popen | None = None
        self._log = None
        if len(str(self.socket_path)) > 107:
            raise ValueError(f"{self.socket_path} is longer than a Unix socket path may be (107 bytes)")

    # ---------------------------------------------------------------- setup
    @property
    def socket_path(self) -> Path:
        return self.workdir / "clamd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def tcp_endpoint(self) -> str:
        if not self.tcp:
            raise ValueError("the bed was made without tcp=True")
        return f"tcp:127.0.0.1:{self.port}"

    def filter_toml(self, tcp: bool = False) -> str:
        """The [filter] lines that point mxgate at this clamd."""
        return (f'clamd = "{self.tcp_endpoint if tcp else self.endpoint}"\n'
                f"clamd_max_stream = {self.max_stream}\n")

    def _write_files(self) -> Path:
        w = self.workdir
        (w / "test.ndb").write_text(f"Eicar-Signature:0:*:{eicar().hex()}\n")
        (w / "test.hdb").write_text(TESTFILE_MD5_LINE + "\n")
        conf = [
            f"LocalSocket {self.socket_path}",
            "Foreground yes",
            f"DatabaseDirectory {w}",
            f"StreamMaxLength {self.max_stream}",
            f"LogFile {w / 'clamd.log'}",
            f"PidFile {w / 'clamd.pid'}",
        ]
        if self.tcp:
            conf += [f"TCPSocket {self.port}", "TCPAddr 127.0.0.1"]
        path = w / "clamd.conf"
        path.write_text("\n".join(conf) + "\n")
        return path

    def start(self, attempts: int = 3) -> "ClamdBed":
        """Starts clamd; with tcp, a port taken in the meantime is retried."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(attempts if self.tcp else 1):
            if self.tcp:
                self.port = free_port()
            conf = self._write_files()
            try:
                self._spawn(conf)
                return self
            except RuntimeError as e:
                last_error = str(e)
                self.stop()
        raise RuntimeError(last_error)

    def _spawn(self, conf: Path) -> None:
        for name in ("clamd.sock", "clamd.log"):
            (self.workdir / name).unlink(missing_ok=True)
        self._log = open(self.workdir / "clamd.out", "wb")
        started = time.monotonic()
        self._proc = subprocess.Popen([CLAMD, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        _running.add(self)
        while time.monotonic() - started < START_TIMEOUT:
            if self._proc.poll() is not None:
                raise RuntimeError(f"clamd exited with {self._proc.returncode}:\n{self.log_text()}")
            if self.socket_path.exists() and self._pings():
                self.start_seconds = time.monotonic() - started
                return
            time.sleep(0.01)
        raise RuntimeError(f"clamd did not answer PING within {START_TIMEOUT} s:\n{self.log_text()}")

    def _pings(self) -> bool:
        try:
            return self.ping(timeout=1.0)
        except OSError:
            return False

    # ---------------------------------------------------------------- teardown
    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None
        _running.discard(self)

    def close(self) -> None:
        """stop(), and remove the work dir if the bed made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "ClamdBed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        parts = []
        for name in ("clamd.out", "clamd.log"):
            p = self.workdir / name
            if p.exists():
                parts.append(p.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    # ---------------------------------------------------------------- talking to it
    def _connect(self, timeout: float, tcp: bool) -> socket.socket:
        if tcp:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                sock.close()
                raise
        return sock

    def ping(self, timeout: float = IO_TIMEOUT, tcp: bool = False) -> bool:
        with self._connect(timeout, tcp) as sock:
            return _exchange(sock, b"zPING\0") == b"PONG"

    def instream(self, data: bytes, chunk: int = 64 * 1024, timeout: float = IO_TIMEOUT,
                 tcp: bool = False) -> str:
        """clamd's reply to one zINSTREAM of data, without its NUL:
        "stream: OK", "stream: <name> FOUND", "INSTREAM size limit exceeded. ERROR"."""
        with self._connect(timeout, tcp) as sock:
            return _exchange(sock, instream_request(data, chunk)).decode("utf-8", "replace")
