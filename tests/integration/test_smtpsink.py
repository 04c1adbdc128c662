"""Black-box tests of bench/tools/smtpsink, the STARTTLS-capable SMTP sink the
benchmark harness relays to.

Peers: Postfix's smtp-source, our own smtpload, openssl s_client -starttls
smtp and raw sockets (mxgate_harness.SmtpClient).  The sink and smtpload are
found next to MXGATE_BINARY (every bench/tools/*.cpp is built into the same
directory); the certificates are the harness's (scripts/make-certs).

Every sink listens on 127.0.0.1, on a port the kernel picks at bind time
(--listen 127.0.0.1:0; it prints the real one) or on one free_port() found
free a moment before; every process a test starts is killed in its cleanup.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from mxgate_harness import BINARY, SmtpClient, certs_dir, client_tls_context, free_port

TOOLS_DIR = BINARY.parent
SINK = TOOLS_DIR / "smtpsink"
SMTPLOAD = TOOLS_DIR / "smtpload"
SMTP_SOURCE = Path("/usr/sbin/smtp-source")

START_TIMEOUT = 20.0
COUNT_TIMEOUT = 60.0
SINK_GREETING = "smtpsink.invalid ESMTP smtpsink"
EHLO_WITH_TLS = ["PIPELINING", "STARTTLS", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]


class Sink:
    """One smtpsink process with its own count file in a temporary directory."""

    def __init__(self, testcase: unittest.TestCase, tls: bool = True, port: int = 0,
                 extra: list[str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="smtpsink-it-"))
        testcase.addCleanup(shutil.rmtree, self.dir, True)
        self.count_file = self.dir / "counts.json"
        args = [str(SINK), "--listen", f"127.0.0.1:{port}", "--count-file", str(self.count_file)]
        if tls:
            certs = certs_dir()
            args += ["--cert", str(certs / "ecdsa.pem"), "--key", str(certs / "ecdsa.key"),
                     "--cert", str(certs / "rsa.pem"), "--key", str(certs / "rsa.key")]
        args += extra or []
        self.stderr_path = self.dir / "stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, start_new_session=True)
        testcase.addCleanup(self.kill)
        line = self._read_line(START_TIMEOUT)
        m = re.fullmatch(r"listening 127\.0\.0\.1:(\d+)", line)
        if not m:
            raise AssertionError(f"unexpected first line {line!r}; stderr: {self.stderr()}")
        self.port = int(m.group(1))
        if port:
            testcase.assertEqual(self.port, port)

    def _read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"smtpsink printed no line within {timeout} s; stderr: {self.stderr()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"smtpsink exited ({self.proc.wait(5)}); stderr: {self.stderr()}")
                data += chunk
        return data.split(b"\n", 1)[0].decode()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def counts(self) -> dict | None:
        try:
            return json.loads(self.count_file.read_text())
        except FileNotFoundError:
            return None

    def wait_counts(self, timeout: float = COUNT_TIMEOUT, **wanted: int) -> dict:
        """Polls the count file until every key in WANTED has its value."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if counts is not None and all(counts.get(k) == v for k, v in wanted.items()):
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(f"counts never reached {wanted}: last {counts}; stderr: {self.stderr()}")
            time.sleep(0.02)

    def client(self, **kw) -> SmtpClient:
        return SmtpClient(self.port, **kw)

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc.stdout.close()


def run(args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Runs a peer in its own session and kills it on timeout."""
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{args[0]} did not finish within {timeout} s: {out!r} {err!r}")
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


def keywords(reply) -> list[str]:
    return [line.split(" ")[0].upper() for line in reply.lines[1:]]


class SinkBuilt(unittest.TestCase):
    def setUp(self):
        if not SINK.exists():
            self.skipTest(f"{SINK} not built")


class TestSmtpSource(SinkBuilt):
    def test_smtp_source_messages_are_all_counted(self):
        if not SMTP_SOURCE.exists():
            self.skipTest("Postfix's smtp-source is not installed")
        sink = Sink(self, tls=False)
        result = run([str(SMTP_SOURCE), "-c", "-l", "5120", "-m", "200", "-s", "10",
                      "-f", "a@x.test", "-t", "b@y.test", f"127.0.0.1:{sink.port}"])
        self.assertEqual(result.returncode, 0, result.stderr)
        counts = sink.wait_counts(messages=200, recipients=200)
        self.assertGreaterEqual(counts["sessions"], 1)
        self.assertEqual(counts["tls_sessions"], 0)
        self.assertGreaterEqual(counts["bytes"], 200 * 5120)
        time.sleep(0.1)  # nothing more arrives later
        self.assertEqual(sink.counts()["messages"], 200)


class TestSmtpLoad(SinkBuilt):
    def test_smtpload_starttls_sessions_and_messages(self):
        if not SMTPLOAD.exists():
            self.skipTest(f"{SMTPLOAD} not built")
        sink = Sink(self)
        result = run([str(SMTPLOAD), "--server", f"127.0.0.1:{sink.port}", "--tls", "starttls",
                      "--sessions", "5", "--total", "20", "--messages", "3", "--json"])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual(report["messages_ok"], 60)
        self.assertEqual(report["tls_sessions"], 20)
        counts = sink.wait_counts(messages=60, tls_sessions=20)
        self.assertEqual(counts["sessions"], 20)
        self.assertEqual(counts["recipients"], 60)
        # Content bytes as the client meant them: smtpload's size, dot-unstuffed.
        self.assertEqual(counts["bytes"], 60 * report["message_size"])

    def test_smtpload_pipelining_cleartext(self):
        if not SMTPLOAD.exists():
            self.skipTest(f"{SMTPLOAD} not built")
        sink = Sink(self)
        result = run([str(SMTPLOAD), "--server", f"127.0.0.1:{sink.port}", "--pipelining",
                      "--sessions", "4", "--total", "8", "--messages", "5", "--size", "1048576", "--json"])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        counts = sink.wait_counts(messages=40)
        self.assertEqual(counts["bytes"], 40 * json.loads(result.stdout)["message_size"])
        self.assertEqual(counts["tls_sessions"], 0)


class TestOpensslStarttls(SinkBuilt):
    def s_client(self, port: int, *options: str) -> str:
        """openssl s_client -starttls smtp, then EHLO and QUIT inside TLS."""
        proc = subprocess.Popen(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}",
             "-crlf", "-ign_eof", *options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(b"EHLO after-tls.example.test\nQUIT\n", timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            raise AssertionError(f"s_client hung: {out!r}")
        return out.decode(errors="replace")

    def test_handshake_and_ehlo_after_tls(self):
        sink = Sink(self)
        out = self.s_client(sink.port)
        self.assertIn("New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384", out)
        # s_client consumes the cleartext EHLO reply; what follows the
        # handshake is the reply to our EHLO inside TLS.
        after = out[out.index("New, TLSv1.3"):]
        m = re.search(r"^250-smtpsink\.invalid\r?\n((?:250[- ].*\r?\n)+)", after, re.M)
        self.assertIsNotNone(m, out)
        ehlo = m.group(1)
        self.assertIn("PIPELINING", ehlo)
        self.assertNotIn("STARTTLS", ehlo)
        self.assertNotIn("CHUNKING", ehlo)
        self.assertIn("221 2.0.0 Bye", after)
        sink.wait_counts(sessions=1, tls_sessions=1, messages=0)

    def test_ecdsa_and_rsa_certificates(self):
        sink = Sink(self)
        for cipher, bits in (("ECDHE-ECDSA-AES128-GCM-SHA256", 256), ("ECDHE-RSA-AES128-GCM-SHA256", 2048)):
            out = self.s_client(sink.port, "-tls1_2", "-cipher", cipher)
            self.assertIn(f"Cipher is {cipher}", out)
            self.assertIn(f"Server public key is {bits} bit", out)
        sink.wait_counts(tls_sessions=2)


class TestProtocol(SinkBuilt):
    def test_greeting_and_ehlo(self):
        sink = Sink(self)
        with sink.client() as c:
            self.assertEqual(c.greeting().first, "220 " + SINK_GREETING)
            ehlo = c.ehlo()
            self.assertEqual(ehlo.code, 250)
            self.assertEqual(ehlo.lines[0], "smtpsink.invalid")
            self.assertEqual([k for k in keywords(ehlo) if k != "SIZE"], EHLO_WITH_TLS)
            self.assertIn("SIZE", keywords(ehlo))
            for line in ("HELO x.test", "NOOP", "RSET"):
                self.assertEqual(c.command(line).code, 250, line)
            self.assertEqual(c.command("QUIT").code, 221)

    def test_no_starttls_without_certificate(self):
        sink = Sink(self, tls=False)
        with sink.client() as c:
            c.greeting()
            self.assertNotIn("STARTTLS", keywords(c.ehlo()))
            self.assertEqual(c.command("STARTTLS").code, 502)

    def test_pipelined_replies_in_order(self):
        sink = Sink(self)
        with sink.client() as c:
            c.greeting()
            c.ehlo()
            message = b"Subject: one\r\n\r\n..dot\r\nbody\r\n.\r\n"
            c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.read_replies(4)], [250, 250, 250, 354])
            # The content, a second whole transaction and QUIT in one write.
            c.send(message + b"MAIL FROM:<>\r\nRCPT TO:<d@z.test>\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.read_replies(4)], [250, 250, 250, 354])
            c.send(b"x\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
            self.assertEqual([r.code for r in c.read_replies(4)], [250, 250, 250, 221])
            self.assertTrue(c.wait_closed())
        counts = sink.wait_counts(messages=2)
        self.assertEqual(counts["recipients"], 3)
        self.assertEqual(counts["bytes"], len(b"Subject: one\r\n\r\n.dot\r\nbody\r\n") + len(b"x\r\n"))

    def test_starttls_discards_injected_commands_and_resets(self):
        sink = Sink(self)
        with sink.client() as c:
            c.greeting()
            c.ehlo()
            c.send(b"MAIL FROM:<a@x.test>\r\n")
            self.assertEqual(c.read_reply().code, 250)
            # Plaintext behind STARTTLS must never be executed inside TLS.
            c.send(b"STARTTLS\r\nRCPT TO:<b@y.test>\r\n")
            self.assertEqual(c.read_reply().code, 220)
            c.sock = client_tls_context(verify=False).wrap_socket(c.sock, server_hostname="mx.example.test")
            # State reset: no EHLO yet after TLS, and the MAIL is forgotten.
            self.assertEqual(c.command("MAIL FROM:<a@x.test>").code, 503)
            ehlo = c.ehlo()
            self.assertNotIn("STARTTLS", keywords(ehlo))
            self.assertEqual(c.command("RCPT TO:<b@y.test>").code, 503)
            self.assertEqual(c.command("STARTTLS").code, 554)
            reply = c.send_message("a@x.test", ["b@y.test"], b"Subject: tls\r\n\r\nhi\r\n")
            self.assertEqual(reply.code, 250)
        sink.wait_counts(messages=1, recipients=1, tls_sessions=1)

    def test_too_many_connections(self):
        sink = Sink(self, tls=False, extra=["--max-connections", "2"])
        held = [sink.client(), sink.client()]
        try:
            for c in held:
                self.assertEqual(c.greeting().code, 220)
            with sink.client() as third:
                self.assertEqual(third.read_reply().code, 421)
                self.assertTrue(third.wait_closed())
        finally:
            for c in held:
                c.close()

    def test_explicit_port(self):
        for _ in range(3):
            port = free_port()
            try:
                sink = Sink(self, tls=False, port=port)
            except AssertionError as e:
                if "in use" in str(e).lower():
                    continue  # someone took the port between probe and bind
                raise
            with sink.client() as c:
                self.assertEqual(c.greeting().code, 220)
            return
        self.fail("no free port three times in a row")

    def test_usage_errors(self):
        for args in (["--listen", "192.0.2.1:2525"], ["--listen", "0.0.0.0:2525"], [],
                     ["--listen", "127.0.0.1:0", "--cert", "x.pem"], ["--bogus"]):
            result = run([str(SINK), *args], timeout=10)
            self.assertEqual(result.returncode, 2, (args, result.stderr))
            self.assertIn("usage:", result.stderr)


class TestSignals(SinkBuilt):
    def test_sigterm_writes_final_counts_and_exits_0(self):
        sink = Sink(self)
        with sink.client() as c:
            c.greeting()
            c.ehlo()
            for i in range(3):
                self.assertEqual(c.send_message("a@x.test", ["b@y.test", "c@y.test"], b"x\r\n").code, 250)
            counts = sink.wait_counts(messages=3, recipients=6)
            # The timer writes only when something changed: the file comes back
            # only if the signal handler writes it.
            sink.count_file.unlink()
            time.sleep(0.1)
            self.assertIsNone(sink.counts())
            self.assertEqual(sink.terminate(), 0)
        self.assertEqual(sink.counts(), counts)
        self.assertEqual(list(counts), ["sessions", "tls_sessions", "messages", "recipients", "bytes"])
        self.assertFalse(Path(str(sink.count_file) + ".tmp").exists())

    def test_sigint_exits_0(self):
        sink = Sink(self, tls=False)
        sink.proc.send_signal(signal.SIGINT)
        self.assertEqual(sink.proc.wait(10), 0)
        self.assertEqual(sink.counts(), {"sessions": 0, "tls_sessions": 0, "messages": 0,
                                         "recipients": 0, "bytes": 0})


if __name__ == "__main__":
    unittest.main()
