"""Helpers for test_relay.py: real peers for mxgate's outbound relaying, all
on loopback addresses other than 127.0.0.1 (each MX host of the DNS bed has
its own address, every receiver listens on the same port P there).

  * LoopbackMxgate: an mxgate (harness MxgateServer) whose listeners may be on
    any 127.0.0.0/8 address, with extra TOML appended (the DNS bed's [dns]),
    and the `mxgate queue ...` command line and its delivery log lines.
  * ScriptedSmtpServer: a scripted SMTP receiver on a raw socket (a real dialogue:
    greeting, EHLO, MAIL, RCPT, DATA, QUIT) whose RCPT replies come from a
    callback; it records every transaction.
  * StartTlsStripper: a man-in-the-middle TCP relay that removes STARTTLS from
    the server's EHLO reply.
  * PostfixServer: a private Postfix instance (its own config_directory,
    queue_directory and virtual Maildir in a temp dir) run with
    `postfix -c DIR start-fg` and stopped with `postfix -c DIR stop`.

Promises: every wait is bounded; close() of each helper stops its threads and
processes (and is safe to call twice); only 127.0.0.0/8 is bound or
connected to.
"""

from __future__ import annotations

import atexit
import email
import email.message
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import mxgate_harness as h

WAIT = 20.0  # bound of every wait in this module; only reached when something is broken


def is_loopback(address: str) -> bool:
    return address.startswith("127.")


def port_free_everywhere() -> int:
    """A TCP port nothing listens on (bound on 127.0.0.1 a moment ago, which
    also fails when a wildcard listener holds it), for every 127.0.0.x."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(address: str, port: int, timeout: float = h.REPLY_TIMEOUT,
            source: str | None = None) -> socket.socket:
    assert is_loopback(address), address
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if source is not None:
            assert is_loopback(source), source
            sock.bind((source, 0))
        sock.connect((address, port))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def smtp_client(address: str, port: int, source: str | None = None,
                timeout: float = h.REPLY_TIMEOUT) -> h.SmtpClient:
    """The harness SmtpClient, connected to any loopback address (optionally
    from a chosen loopback source address)."""
    client = h.SmtpClient(port, timeout=timeout, connect=False)
    client.host = address
    client.sock = connect(address, port, timeout, source)
    return client


# --------------------------------------------------------------------------
# mxgate on any loopback address


DELIVERY_LINE = re.compile(
    r"delivery: (?P<id>[0-9A-Za-z]+): to=(?P<to>\S+)"
    r"(?: relay=(?P<relay>\S+))? tls=(?P<level>\S+)"
    r"(?: (?P<summary>.*?))?(?: rcpt=<(?P<rcpt>[^>]*)>)?"
    r" status=(?P<status>sent|deferred|bounced) \((?P<reason>.*)\)$", re.M)


class LoopbackMxgate(h.MxgateServer):
    def __init__(self, config: dict | None = None, extra_toml: str = "", **kw):
        super().__init__(config, **kw)
        self.extra_toml = extra_toml

    def write_config(self) -> None:
        text = h.render_toml(self.build_config())
        if self.extra_toml:
            text += "\n" + self.extra_toml
        self.config_path.write_text(text)

    def client(self, listener: int | dict = 0, **kw) -> h.SmtpClient:
        entry = self.listeners[listener] if isinstance(listener, int) else listener
        assert entry["tls"] != "implicit"
        return smtp_client(entry["host"], entry["port"], source=kw.get("source"),
                           timeout=kw.get("timeout", h.REPLY_TIMEOUT))

    def session(self, source: str | None = None) -> h.SmtpClient:
        c = self.client(source=source)
        r = c.greeting()
        assert r.code == 220, f"greeting: {r}"
        r = c.ehlo()
        assert r.code == 250, f"EHLO: {r}"
        return c

    def submit(self, sender: str, rcpts: list[str], content: bytes) -> str:
        """Sends one message over SMTP; returns its queue id."""
        with self.session() as c:
            qid = h.queue_id(c.send_message(sender, rcpts, content))
            c.command("QUIT")
        return qid

    # ---- mxgate queue ...
    def queue_command(self, *args: str) -> subprocess.CompletedProcess:
        return h.run([str(h.BINARY), "queue", *args, "--config", str(self.config_path)], timeout=WAIT)

    def queue_list(self) -> list[dict]:
        proc = self.queue_command("list", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    # ---- the log
    def deliveries(self, qid: str | None = None) -> list[re.Match]:
        """The delivery log lines (one per attempt and destination), optionally of one queue id."""
        return [m for m in DELIVERY_LINE.finditer(self.log_text()) if qid is None or m["id"] == qid]

    def wait_deliveries(self, qid: str, count: int, timeout: float = WAIT,
                        predicate: Callable[[re.Match], bool] = lambda m: True) -> list[re.Match]:
        """Waits until at least COUNT delivery lines of QID satisfy PREDICATE; returns those."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.deliveries(qid) if predicate(m)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} matching delivery lines for {qid}, found "
                                     f"{len(found)}; log:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)


# --------------------------------------------------------------------------
# A scripted SMTP receiver


class ScriptedSmtpServer:
    """Listens on address:port; each RCPT is answered rcpt_reply(address, n)
    where n counts the RCPTs for that address so far (1 for the first).
    transactions: one dict per accepted DATA (sender, recipients, data)."""

    def __init__(self, address: str, port: int, rcpt_reply: Callable[[str, int], str],
                 name: str = "scripted.test"):
        assert is_loopback(address)
        self.name = name
        self.rcpt_reply = rcpt_reply
        self.rcpt_counts: Counter[str] = Counter()
        self.transactions: list[dict] = []
        self.commands: list[str] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(16)
        self.listener.settimeout(0.1)  # accept() polls self.stopping
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(WAIT)
            with self.lock:
                self.connections += 1
                self.sockets.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket):
        buf = b""

        def line() -> bytes | None:
            nonlocal buf
            while b"\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return None
                buf += data
            one, buf = buf.split(b"\r\n", 1)
            return one

        def say(text: str):
            conn.sendall(text.encode() + b"\r\n")

        try:
            say(f"220 {self.name} ESMTP scripted")
            sender, rcpts = None, []
            while True:
                cmd = line()
                if cmd is None:
                    return
                text = cmd.decode("utf-8", "replace")
                with self.lock:
                    self.commands.append(text)
                verb = text.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    say(f"250-{self.name}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
                elif verb == "HELO":
                    say(f"250 {self.name}")
                elif verb == "MAIL":
                    m = re.match(r"MAIL FROM:<([^>]*)>", text, re.I)
                    sender, rcpts = (m.group(1) if m else ""), []
                    say("250 2.1.0 Ok")
                elif verb == "RCPT":
                    m = re.match(r"RCPT TO:<([^>]*)>", text, re.I)
                    rcpt = m.group(1) if m else ""
                    with self.lock:
                        self.rcpt_counts[rcpt] += 1
                        n = self.rcpt_counts[rcpt]
                    reply = self.rcpt_reply(rcpt, n)
                    if reply.startswith("2"):
                        rcpts.append(rcpt)
                    say(reply)
                elif verb == "DATA":
                    if not rcpts:
                        say("554 5.5.1 No valid recipients")
                        continue
                    say("354 End data with <CR><LF>.<CR><LF>")
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    end = (b"\r\n" + buf).index(b"\r\n.\r\n")
                    data, buf = buf[:end], buf[end + 3:]
                    with self.lock:
                        self.transactions.append({"sender": sender, "recipients": list(rcpts),
                                                  "data": data})
                    say(f"250 2.0.0 Ok: queued as FAKE{len(self.transactions)}")
                elif verb == "RSET":
                    sender, rcpts = None, []
                    say("250 2.0.0 Ok")
                elif verb == "QUIT":
                    say("221 2.0.0 Bye")
                    return
                else:
                    say("502 5.5.2 Command not recognized")
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self.accepter.join(5)
        for t in self.threads:
            t.join(5)


# --------------------------------------------------------------------------
# A man in the middle that strips STARTTLS


class StartTlsStripper:
    """A TCP relay address:port -> upstream; in every reply from the server,
    the "STARTTLS" line is removed (and the new last line made final).
    client_data holds every byte the client sent."""

    def __init__(self, address: str, port: int, upstream: tuple[str, int]):
        assert is_loopback(address) and is_loopback(upstream[0])
        self.upstream = upstream
        self.client_data = b""
        self.stripped = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = connect(*self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self.lock:
                self.connections += 1
                self.sockets += [client, server]
            for target, args in ((self._client_to_server, (client, server)),
                                 (self._server_to_client, (server, client))):
                t = threading.Thread(target=target, args=args, daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _close_pair(a: socket.socket, b: socket.socket):
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _client_to_server(self, src: socket.socket, dst: socket.socket):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.client_data += data
                dst.sendall(data)
        except OSError:
            pass
        self._close_pair(src, dst)

    def _server_to_client(self, src: socket.socket, dst: socket.socket):
        buf = b""
        reply: list[bytes] = []
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    reply.append(line)
                    if line[3:4] == b"-":
                        continue  # a multi-line reply goes on
                    kept = [l for l in reply if l[4:].strip().upper() != b"STARTTLS"]
                    if len(kept) != len(reply):
                        with self.lock:
                            self.stripped += 1
                        kept[-1] = kept[-1][:3] + b" " + kept[-1][4:]
                    reply = []
                    dst.sendall(b"".join(l + b"\r\n" for l in kept))
        except OSError:
            pass
        self._close_pair(src, dst)

    def close(self):
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self.accepter.join(5)
        for t in self.threads:
            t.join(5)


# --------------------------------------------------------------------------
# A real Postfix


_live_postfix: set["PostfixServer"] = set()


@atexit.register
def _stop_leftover_postfix() -> None:
    for server in list(_live_postfix):
        server.close()


def postfix_available() -> str | None:
    """None when a private Postfix can run here, else why not."""
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    if not shutil.which("postfix") or not Path("/usr/lib/postfix/sbin/master").exists():
        return "the Debian package postfix is not installed (scripts/setup installs it)"
    try:
        pwd.getpwnam("postfix")
        pwd.getpwnam("nobody")
    except KeyError as e:
        return f"missing account: {e}"
    return None


def _session_members(sid: int) -> list[tuple[int, int, str]]:
    """(pid, ppid, state) of every process in session SID."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            out.append((int(entry.name), int(fields[1]), fields[0]))
    return out


class PostfixServer:
    """A private Postfix receiving on address:port (smtpd with STARTTLS
    offered, smtpd_tls_security_level = may) and delivering every recipient of
    DOMAINS to one Maildir (virtual(8), as user nobody)."""

    MASTER_CF = """\
{address}:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

    def __init__(self, address: str, port: int, domains: list[str], certs: Path):
        assert is_loopback(address)
        self.address, self.port, self.domains = address, port, domains
        self.dir = Path(tempfile.mkdtemp(prefix="mxgate-postfix-"))
        os.chmod(self.dir, 0o755)  # the daemons run as user postfix
        self.conf = self.dir / "conf"
        self.queue = self.dir / "queue"
        self.data = self.dir / "data"
        self.vmail = self.dir / "vmail"
        self.log = self.dir / "maillog"
        self.proc: subprocess.Popen | None = None
        self.master_pid: int | None = None
        for d in (self.conf, self.queue, self.data, self.vmail):
            d.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(self.vmail, nobody.pw_uid, nobody.pw_gid)
        os.chown(self.data, pwd.getpwnam("postfix").pw_uid, -1)
        # Every NAME.key / NAME.pem pair in certs, key first (smtpd_tls_chain_files).
        chain = []
        for key in sorted(certs.glob("*.key")):
            for path in (key, key.with_suffix(".pem")):
                shutil.copy2(path, self.conf / path.name)
                chain.append(str(self.conf / path.name))
        assert chain, f"no NAME.key/NAME.pem pair in {certs}"
        c = self.conf
        main_cf = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.test",
            "mydomain": "postfix.test",
            "mydestination": "",
            # Only 127.0.0.1 is an interface address here; 127.0.0.4 etc. are
            # bindable but Postfix refuses them in inet_interfaces, so the
            # address is given in master.cf only.
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "maillog_file_prefixes": self.dir,
            "maillog_file": self.log,
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "smtpd_tls_chain_files": ", ".join(chain),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
            "virtual_mailbox_domains": ", ".join(domains),
            "virtual_mailbox_base": self.vmail,
            "virtual_mailbox_maps": "static:Maildir/",
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
        }
        (c / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main_cf.items()))
        (c / "master.cf").write_text(self.MASTER_CF.format(address=address, port=port))

    def _postfix(self, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
        return h.run(["postfix", "-c", str(self.conf), *args], timeout=timeout)

    def start(self) -> "PostfixServer":
        out = open(self.dir / "start-fg.out", "wb")
        try:
            # start-fg: master stays a child of the postfix-script shell we
            # start (and then our grandchild), so nothing is left to init.
            self.proc = subprocess.Popen(["postfix", "-c", str(self.conf), "start-fg"],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            out.close()
        _live_postfix.add(self)
        deadline = time.monotonic() + WAIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postfix start-fg exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with smtp_client(self.address, self.port, timeout=2) as c:
                    greeting = c.greeting()
                    c.send(b"QUIT\r\n")
                    c.wait_closed(2)
                if greeting.code == 220:
                    break
            except (OSError, AssertionError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not greet on {self.address}:{self.port}:\n{self.log_text()}")
            time.sleep(0.1)
        self.master_pid = self._read_master_pid()
        return self

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        """postfix stop; then SIGKILL whatever is left of master and its
        daemons, reap what was orphaned to us, and remove the directory."""
        if self.proc is not None:
            master = self.master_pid or self._read_master_pid()
            try:
                self._postfix("stop", timeout=WAIT)
            except subprocess.TimeoutExpired:
                pass
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                pass
            for sid in {s for s in (master, self.proc.pid) if s}:
                deadline = time.monotonic() + 10
                while any(state != "Z" for _, _, state in _session_members(sid)):
                    if time.monotonic() > deadline:
                        try:
                            os.killpg(sid, signal.SIGKILL)
                        except (ProcessLookupError, PermissionError):
                            pass
                        break
                    time.sleep(0.05)
                # A daemon whose master exited first may be orphaned to us
                # when a test helper made this process a child subreaper.
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    members = _session_members(sid)
                    for pid, ppid, _ in members:
                        if ppid == os.getpid() and pid != self.proc.pid:
                            try:
                                os.waitpid(pid, os.WNOHANG)
                            except ChildProcessError:
                                pass
                    if all(ppid != os.getpid() or pid == self.proc.pid for pid, ppid, _ in members):
                        break
                    time.sleep(0.02)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
        _live_postfix.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        parts = []
        for p in (self.dir / "start-fg.out", self.log):
            if p.exists():
                parts.append(p.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def maildir_files(self) -> list[Path]:
        files = []
        for sub in ("new", "cur"):
            d = self.vmail / "Maildir" / sub
            if d.is_dir():
                files.extend(p for p in d.iterdir() if p.is_file())
        return sorted(files)

    def messages(self) -> list[email.message.Message]:
        return [email.message_from_bytes(p.read_bytes()) for p in self.maildir_files()]

    def wait_for_message(self, message_id: str, timeout: float = WAIT) -> email.message.Message:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages():
                if m.get("Message-ID") == message_id:
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix did not deliver {message_id}; its log:\n{self.log_text()}")
            time.sleep(0.05)
