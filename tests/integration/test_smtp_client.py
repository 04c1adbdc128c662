"""The outbound SMTP client (src/delivery/smtp_client.cpp) through the test-only
bench/tools/smtpsend, against real receivers on loopback:

  * mxgate itself: delivered content, dot-stuffing, per-recipient results,
    TLS levels none/may/encrypt/verify, DANE-EE/DANE-TA with hashes computed
    from mxgate's certificates by openssl, a wrong hash, a receiver without
    STARTTLS;
  * a man-in-the-middle relay that strips STARTTLS from the EHLO reply, and
    one that injects "250 injected" right after the STARTTLS 220;
  * a scripted raw SMTP server for per-recipient refusals, SMTPUTF8, a bad
    greeting, a broken handshake (cleartext retry under "may"), timeouts and
    the exact bytes on the wire.

Every server listens on 127.0.0.1 on a port chosen at run time; every thread,
socket and process is stopped in the test's cleanup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path

import mxgate_harness as h
from mxgate_harness import HOSTNAME

SMTPSEND = Path(h.BINARY).parent / "smtpsend"
STEP_TIMEOUT = 15.0  # per smtpsend wait; only matters when something is broken
RUN_TIMEOUT = 90.0

ANONYMOUS = re.compile(r"^anonymous TLS TLSv1\.[23] \S+$")
DANE_EE = re.compile(r"^verified TLS \(DANE-EE\) TLSv1\.3 TLS_\S+$")
TRUSTED = re.compile(r"^trusted TLS TLSv1\.3 TLS_\S+$")
DANE_TA = re.compile(r"^verified TLS \(DANE-TA\) TLSv1\.3 TLS_\S+$")
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$")


# --------------------------------------------------------------------------
# smtpsend and certificate hashes


def spki_der(name: str) -> bytes:
    """DER SubjectPublicKeyInfo of certs_dir()/NAME.pem, extracted by openssl."""
    pem = h.certs_dir() / f"{name}.pem"
    pub = h.run(["openssl", "x509", "-in", str(pem), "-noout", "-pubkey"], timeout=30)
    assert pub.returncode == 0, pub.stderr
    der = h.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.stdout, timeout=30)
    assert der.returncode == 0, der.stderr
    return der.stdout


def tlsa(usage: int, selector: int, mtype: int, name: str) -> str:
    data = h.cert_der(name) if selector == 0 else spki_der(name)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return f"{usage} {selector} {mtype} {data.hex()}"


def openssl_spki_sha256(name: str) -> str:
    """The same digest as tlsa(3, 1, 1, name), computed by openssl dgst alone."""
    der = spki_der(name)
    out = h.run(["openssl", "dgst", "-sha256", "-r"], input=der, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0].decode()


class SendResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout.decode("utf-8", "replace")
        self.stderr = proc.stderr.decode("utf-8", "replace")
        try:
            self.json = json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"smtpsend printed no JSON (exit {self.returncode}):\n"
                                 f"stdout: {self.stdout}\nstderr: {self.stderr}")

    @property
    def failed(self) -> bool:
        return bool(self.json.get("connection_failed"))

    @property
    def error(self) -> str:
        return self.json.get("error", "")

    @property
    def tls(self) -> str:
        return self.json.get("tls_summary", "")

    def results(self) -> dict[str, tuple[int, str]]:
        return {r["recipient"]: (r["code"], r["reply"]) for r in self.json.get("recipients", [])}

    def __repr__(self):
        return f"smtpsend exit {self.returncode}: {self.stdout.strip()}\nstderr: {self.stderr[-2000:]}"


class ClientTestCase(unittest.TestCase):
    def setUp(self):
        self.assertTrue(SMTPSEND.exists(), f"smtpsend not built next to {h.BINARY}")
        self.tmp = Path(tempfile.mkdtemp(prefix="mxgate-smtpsend-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sent: list[bytes] = []  # every message this test handed to smtpsend

    def send(self, port: int, tls: str = "none", content: bytes | None = None,
             to: list[str] | None = None, sender: str = "sender@client.example.test",
             host: str = HOSTNAME, tlsa_records: list[str] | None = None, smtputf8: bool = False,
             timeout: float = STEP_TIMEOUT, env: dict | None = None) -> SendResult:
        message = self.tmp / f"msg-{time.monotonic_ns()}.eml"
        content = content if content is not None else h.make_message()
        message.write_bytes(content)
        self.sent.append(content)
        args = [str(SMTPSEND), "--server", f"127.0.0.1:{port}", "--tls", tls, "--host", host,
                "--from", sender, "--file", str(message), "--timeout", str(int(timeout))]
        for rcpt in (to or ["rcpt@example.test"]):
            args += ["--to", rcpt]
        for record in (tlsa_records or []):
            args += ["--tlsa", record]
        if smtputf8:
            args.append("--smtputf8")
        return SendResult(h.run(args, timeout=RUN_TIMEOUT, env=env))

    def assertDelivered(self, result: SendResult, recipients: list[str]):
        self.assertFalse(result.failed, result)
        self.assertEqual(result.returncode, 0, result)
        got = result.results()
        self.assertEqual(sorted(got), sorted(recipients), result)
        for rcpt in recipients:
            self.assertEqual(got[rcpt][0], 250, result)
            self.assertRegex(got[rcpt][1], QUEUED)


# --------------------------------------------------------------------------
# Man-in-the-middle relay


class Relay:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:upstream.  server_filter(data,
    state) rewrites each chunk from the server to the client (a list of
    chunks is sent as separate segments 0.3 s apart); client bytes are
    recorded in client_data."""

    def __init__(self, upstream: int, server_filter=None):
        self.upstream = upstream
        self.server_filter = server_filter or (lambda data, state: data)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)  # accept() polls self.stopping: close() alone does not wake it
        self.port = self.listener.getsockname()[1]
        self.client_data = b""
        self.state: dict = {}
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.stopping = False
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
            client.settimeout(None)
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            for src, dst, up in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, up), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, client_to_server: bool):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if client_to_server:
                    with self.lock:
                        self.client_data += data
                    dst.sendall(data)
                    continue
                with self.lock:
                    out = self.server_filter(data, self.state)
                # A list is sent as separate segments, a moment apart.
                for i, chunk in enumerate(out if isinstance(out, list) else [out]):
                    if i:
                        time.sleep(0.3)
                    dst.sendall(chunk)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

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
        self.accepter.join(10)
        for t in self.threads:
            t.join(10)


def strip_starttls(data: bytes, state: dict) -> bytes:
    stripped = re.sub(rb"(?im)^250-STARTTLS\r\n", b"", data)
    if stripped != data:
        state["stripped"] = state.get("stripped", 0) + 1
    return stripped


STARTTLS_220 = b"220 2.0.0 Ready to start TLS\r\n"
INJECTED = b"250 injected\r\n"


def inject_after_starttls(data: bytes, state: dict) -> bytes:
    if not state.get("injected") and data.endswith(STARTTLS_220):
        state["injected"] = True
        return data + INJECTED  # same segment as the 220
    return data


def inject_late_after_starttls(data: bytes, state: dict):
    """The injection in its own segment, after the client has read the 220:
    it reaches the client's TLS layer, never its reply parser."""
    if not state.get("injected") and data.endswith(STARTTLS_220):
        state["injected"] = True
        return [data, INJECTED]
    return data


# --------------------------------------------------------------------------
# Scripted raw SMTP server


class ScriptedServer:
    """A real SMTP server on a socket, answering from a script:
      greeting, ehlo (list of keyword lines; None: EHLO gets 502), starttls_reply,
      mail_reply, rcpt (address -> reply), data_reply, end_reply,
      after_starttls ("garbage" or "close") for a broken handshake,
      silent (never greet).
    Records per connection: commands (lines), data (raw bytes after 354 up to
    and including CRLF.CRLF) and which commands arrived in the same recv."""

    def __init__(self, **script):
        self.script = {
            "greeting": "220 scripted.example.test ESMTP",
            "ehlo": ["PIPELINING", "SIZE 1000000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"],
            "starttls_reply": "220 2.0.0 Ready to start TLS",
            "mail_reply": "250 2.1.0 Ok",
            "rcpt": {},
            "data_reply": "354 End data with <CR><LF>.<CR><LF>",
            "end_reply": "250 2.0.0 Ok: queued as SCRIPTED1",
            "after_starttls": None,
            "silent": False,
        }
        self.script.update(script)
        self.connections: list[dict] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)  # accept() polls self.stopping: close() alone does not wake it
        self.port = self.listener.getsockname()[1]
        self.stopping = False
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
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
            record = {"commands": [], "data": b"", "batches": []}
            self.connections.append(record)
            self.sockets.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, record), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket, record: dict):
        s = self.script
        conn.settimeout(30)
        buffer = b""

        def send(text: str):
            conn.sendall(text.encode() + b"\r\n")

        try:
            if s["silent"]:
                while conn.recv(4096):
                    pass
                return
            send(s["greeting"])
            while True:
                while b"\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                    record["batches"].append(data)
                line, buffer = buffer.split(b"\r\n", 1)
                text = line.decode("utf-8", "replace")
                record["commands"].append(text)
                verb = text.split(" ", 1)[0].upper()
                if verb == "EHLO" and s["ehlo"] is None:
                    send("502 5.5.2 Error: command not recognized")
                elif verb == "EHLO":
                    lines = ["scripted.example.test"] + list(s["ehlo"])
                    conn.sendall("".join(f"250{'-' if i + 1 < len(lines) else ' '}{l}\r\n"
                                         for i, l in enumerate(lines)).encode())
                elif verb == "HELO":
                    send("250 scripted.example.test")
                elif verb == "STARTTLS":
                    send(s["starttls_reply"])
                    if s["starttls_reply"].startswith("220"):
                        if s["after_starttls"] == "garbage":
                            conn.sendall(b"this is not TLS\r\n" * 4)
                        return  # close: no TLS here
                elif verb == "MAIL":
                    send(s["mail_reply"])
                elif verb == "RCPT":
                    m = re.match(r"RCPT TO:<([^>]*)>", text, re.I)
                    send(s["rcpt"].get(m.group(1) if m else "", "250 2.1.5 Ok"))
                elif verb == "DATA":
                    send(s["data_reply"])
                    if s["data_reply"].startswith("354"):
                        while b"\r\n.\r\n" not in buffer:
                            data = conn.recv(65536)
                            if not data:
                                return
                            buffer += data
                        end = buffer.index(b"\r\n.\r\n") + 5
                        record["data"], buffer = buffer[:end], buffer[end:]
                        send(s["end_reply"])
                elif verb == "QUIT":
                    send("221 2.0.0 Bye")
                    return
                elif verb == "RSET":
                    send("250 2.0.0 Ok")
                else:
                    send("502 5.5.2 Not implemented")
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.accepter.join(10)
        for t in self.threads:
            t.join(10)


# --------------------------------------------------------------------------
# (a) mxgate as the receiving server


DOTTY_BODY = ".first line starts with a dot\r\n.\r\n..\r\nmiddle\r\n. space\r\n...three\r\nlast"


def message_id(content: bytes) -> bytes:
    m = re.search(rb"(?im)^Message-ID: *(<[^>\r\n]+>)", content)
    assert m, f"no Message-ID in {content[:200]!r}"
    return m.group(1)


class MxgateReceiverTest(ClientTestCase):
    """One mxgate per test class (tests tell their messages apart by
    Message-ID), started and stopped through the harness."""

    config: dict = {}

    @classmethod
    def setUpClass(cls):
        cls.server = h.MxgateServer(cls.server_config())
        cls.addClassCleanup(cls.server.close)
        cls.server.start()

    @classmethod
    def server_config(cls) -> dict:
        return cls.config

    def delivered_with(self, marker: bytes) -> h.Delivered:
        deadline = time.monotonic() + h.DELIVERY_TIMEOUT
        while True:
            for m in self.server.messages():
                if marker in m.raw:
                    return m
            if time.monotonic() > deadline:
                self.fail(f"no delivered message contains {marker!r}; log:\n{self.server.log_text()[-3000:]}")
            time.sleep(0.05)

    def delivered(self, content: bytes) -> h.Delivered:
        return self.delivered_with(message_id(content))

    def assert_none_stored(self, settle: float = 1.0) -> None:
        """No message this test sent is in the maildir or the spool, also after SETTLE seconds."""
        time.sleep(settle)
        ids = [message_id(c) for c in self.sent]
        for path in self.server.maildir_files() + self.server.spool_files():
            try:
                data = path.read_bytes()
            except OSError:
                continue  # renamed or removed meanwhile
            for mid in ids:
                self.assertNotIn(mid, data, f"{mid!r} was stored: {path}")


class CleartextAndOpportunisticTest(MxgateReceiverTest):
    def test_cleartext_delivery_dot_stuffing_and_recipients(self):
        msg = h.make_message(subject="dots", body=DOTTY_BODY)
        r = self.send(self.server.port, "none", msg, to=["one@example.test", "two@example.test"])
        self.assertDelivered(r, ["one@example.test", "two@example.test"])
        self.assertEqual(r.tls, "cleartext")
        self.assertEqual(r.results()["one@example.test"], r.results()["two@example.test"])
        delivered = self.delivered(msg)
        self.assertEqual(delivered.content, h.lf(msg))  # unstuffed back to the original
        self.assertEqual(delivered.return_path, "<sender@client.example.test>")
        m = h.parse_received(delivered)
        self.assertEqual(m.group("helo"), "smtpsend.example.test")
        self.assertIsNone(m.group("tlsver"))

    def test_message_starting_with_a_dot_and_without_final_crlf(self):
        msg = (b".X-First: dot at the very start\r\nMessage-ID: <startdot." + str(time.time_ns()).encode() +
               b"@client.example.test>\r\n\r\nno final line end")
        r = self.send(self.server.port, "none", msg)
        self.assertDelivered(r, ["rcpt@example.test"])
        delivered = self.delivered(msg)
        self.assertEqual(delivered.content, h.lf(msg + b"\r\n"))

    def test_may_is_anonymous_tls(self):
        msg = h.make_message(subject="may", body=DOTTY_BODY)
        r = self.send(self.server.port, "may", msg)
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertRegex(r.tls, ANONYMOUS)
        delivered = self.delivered(msg)
        self.assertEqual(delivered.content, h.lf(msg))
        m = h.parse_received(delivered)
        self.assertEqual(m.group("tlsver"), r.tls.split()[2])
        self.assertEqual(m.group("cipher"), r.tls.split()[3])

    def test_encrypt_is_anonymous_tls(self):
        msg = h.make_message(subject="encrypt")
        r = self.send(self.server.port, "encrypt", msg)
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertRegex(r.tls, ANONYMOUS)
        self.assertIsNotNone(h.parse_received(self.delivered(msg)).group("tlsver"))

    def test_verify_refuses_a_self_signed_certificate(self):
        r = self.send(self.server.port, "verify", h.make_message(subject="verify"))
        self.assertTrue(r.failed, r)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.error, "certificate verification failed: self-signed certificate")
        self.assertEqual(r.results(), {})
        self.assert_none_stored()

    def test_smtputf8_envelope_to_mxgate(self):
        msg = h.make_message(subject="utf8")
        r = self.send(self.server.port, "may", msg, to=["ünïcode@example.test"], smtputf8=True)
        self.assertDelivered(r, ["ünïcode@example.test"])
        self.delivered(msg)

    def test_per_recipient_refusal_by_mxgate(self):
        # mxgate refuses a syntactically bad recipient; the good one still gets the message.
        msg = h.make_message(subject="mixed")
        r = self.send(self.server.port, "none", msg, to=["good@example.test", "bad@@example.test"])
        self.assertFalse(r.failed, r)
        results = r.results()
        self.assertEqual(results["good@example.test"][0], 250, r)
        self.assertRegex(results["good@example.test"][1], QUEUED)
        self.assertEqual(results["bad@@example.test"][0] // 100, 5, r)
        self.delivered(msg)


class DaneTest(MxgateReceiverTest):
    def test_spki_hash_matches_openssl(self):
        for name in ("ecdsa", "rsa"):
            self.assertEqual(tlsa(3, 1, 1, name), f"3 1 1 {openssl_spki_sha256(name)}")

    def test_dane_ee_spki_sha256(self):
        # Both certificates are published, as an operator of a dual-cert server would.
        records = [tlsa(3, 1, 1, "ecdsa"), tlsa(3, 1, 1, "rsa")]
        msg = h.make_message(subject="dane-ee", body=DOTTY_BODY)
        r = self.send(self.server.port, "dane", msg, tlsa_records=records)
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertRegex(r.tls, DANE_EE)
        self.assertEqual(self.delivered(msg).content, h.lf(msg))

    def test_dane_ee_matches_the_certificate_actually_presented(self):
        # mxgate holds an ECDSA and an RSA certificate and presents one of them:
        # a record for exactly one of the two keys succeeds, the other is a mismatch.
        outcomes = {}
        for name in ("ecdsa", "rsa"):
            r = self.send(self.server.port, "dane", h.make_message(), tlsa_records=[tlsa(3, 1, 1, name)])
            outcomes[name] = "ok" if not r.failed and DANE_EE.match(r.tls) else r.error
        self.assertEqual(sorted(outcomes.values()), ["TLSA mismatch", "ok"], outcomes)

    def test_dane_ee_other_selectors_and_matching_types(self):
        for record_set in ([tlsa(3, 0, 1, "ecdsa"), tlsa(3, 0, 1, "rsa")],
                           [tlsa(3, 1, 2, "ecdsa"), tlsa(3, 1, 2, "rsa")],
                           [tlsa(3, 0, 0, "ecdsa"), tlsa(3, 0, 0, "rsa")]):
            r = self.send(self.server.port, "dane", h.make_message(), tlsa_records=record_set)
            self.assertDelivered(r, ["rcpt@example.test"])
            self.assertRegex(r.tls, DANE_EE)

    def test_dane_ee_ignores_the_name(self):
        # RFC 7672 3.1.1: no name checks for DANE-EE.
        records = [tlsa(3, 1, 1, "ecdsa"), tlsa(3, 1, 1, "rsa")]
        r = self.send(self.server.port, "dane", h.make_message(), host="other-name.example.net",
                      tlsa_records=records)
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertRegex(r.tls, DANE_EE)

    def test_wrong_hash_is_tlsa_mismatch_and_nothing_delivered(self):
        r = self.send(self.server.port, "dane", h.make_message(subject="wrong"),
                      tlsa_records=["3 1 1 " + hashlib.sha256(b"not the key").hexdigest()])
        self.assertTrue(r.failed, r)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.error, "TLSA mismatch")
        self.assertEqual(r.results(), {})
        self.assert_none_stored()
        self.assertIn("TLSA mismatch", r.stderr)

    def test_only_unusable_records_mean_encrypt(self):
        # PKIX-EE(1) is ignored for SMTP: secure records but none usable -> mandatory unauthenticated TLS.
        r = self.send(self.server.port, "dane", h.make_message(), tlsa_records=[tlsa(1, 1, 1, "ecdsa")])
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertRegex(r.tls, ANONYMOUS)

    def test_dane_without_tlsa_is_opportunistic_and_dane_only_defers(self):
        r = self.send(self.server.port, "dane", h.make_message())
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertRegex(r.tls, ANONYMOUS)
        d = self.send(self.server.port, "dane-only", h.make_message())
        self.assertEqual(d.json, {"deferred": True, "reason": "no usable TLSA records"})
        self.assertEqual(d.returncode, 1)


def make_ca_chain(directory: Path) -> dict[str, Path]:
    """A test CA and a leaf for HOSTNAME it signed (ECDSA P-256), by openssl.
    Returns paths: ca (PEM), chain (leaf then CA), key (leaf key)."""
    def openssl(*args: str) -> None:
        p = h.run(["openssl", *args], timeout=60, cwd=str(directory))
        assert p.returncode == 0, p.stderr.decode("utf-8", "replace")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=mxgate test DANE-TA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={HOSTNAME}")
    (directory / "leaf.ext").write_text(f"subjectAltName=DNS:{HOSTNAME}\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2",
            "-days", "30", "-extfile", "leaf.ext", "-out", "leaf.pem")
    chain = directory / "chain.pem"
    chain.write_bytes((directory / "leaf.pem").read_bytes() + (directory / "ca.pem").read_bytes())
    return {"ca": directory / "ca.pem", "chain": chain, "key": directory / "leaf.key"}


class DaneTrustAnchorTest(MxgateReceiverTest):
    """mxgate serving a leaf signed by a private CA; the TLSA record names the CA."""

    @classmethod
    def server_config(cls) -> dict:
        pki_dir = Path(tempfile.mkdtemp(prefix="mxgate-pki-"))
        cls.addClassCleanup(shutil.rmtree, pki_dir, True)
        cls.pki = make_ca_chain(pki_dir)
        return {"tls": {"certificates": [{"cert": str(cls.pki["chain"]), "key": str(cls.pki["key"])}]}}

    def ca_record(self, selector: int = 0) -> str:
        der = ssl_pem_to_der(self.pki["ca"])
        if selector == 1:
            pub = h.run(["openssl", "x509", "-in", str(self.pki["ca"]), "-noout", "-pubkey"], timeout=30)
            der = h.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.stdout, timeout=30).stdout
        return f"2 {selector} 1 {hashlib.sha256(der).hexdigest()}"

    def test_dane_ta(self):
        for selector in (0, 1):
            r = self.send(self.server.port, "dane", h.make_message(subject=f"dane-ta-{selector}"),
                          tlsa_records=[self.ca_record(selector)])
            self.assertDelivered(r, ["rcpt@example.test"])
            self.assertRegex(r.tls, DANE_TA)

    def test_dane_ta_checks_the_name(self):
        # Unlike DANE-EE, DANE-TA keeps the name check against the MX host (RFC 7672 3.2.2).
        r = self.send(self.server.port, "dane", h.make_message(), host="other-name.example.net",
                      tlsa_records=[self.ca_record()])
        self.assertTrue(r.failed, r)
        self.assertEqual(r.error, "certificate verification failed: hostname mismatch")
        self.assert_none_stored()

    def test_dane_ta_record_for_another_ca_is_a_mismatch(self):
        r = self.send(self.server.port, "dane", h.make_message(),
                      tlsa_records=[tlsa(2, 0, 1, "ecdsa")])
        self.assertTrue(r.failed, r)
        self.assertEqual(r.error, "TLSA mismatch")

    def test_verify_without_the_ca_in_the_system_store(self):
        r = self.send(self.server.port, "verify", h.make_message())
        self.assertTrue(r.failed, r)
        self.assertEqual(r.error, "certificate verification failed: self-signed certificate in certificate chain")
        self.assert_none_stored()

    def test_verify_with_the_ca_as_system_store(self):
        # SSL_CTX_set_default_verify_paths honours SSL_CERT_FILE: the test CA stands in for the system store.
        env = dict(os.environ, SSL_CERT_FILE=str(self.pki["ca"]), SSL_CERT_DIR=str(self.tmp / "no-such-dir"))
        msg = h.make_message(subject="verify-ok")
        r = self.send(self.server.port, "verify", msg, env=env)
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertRegex(r.tls, TRUSTED)
        self.delivered(msg)
        wrong = self.send(self.server.port, "verify", h.make_message(), host="other-name.example.net", env=env)
        self.assertTrue(wrong.failed, wrong)
        self.assertEqual(wrong.error, "certificate verification failed: hostname mismatch")


def ssl_pem_to_der(path: Path) -> bytes:
    import ssl
    return ssl.PEM_cert_to_DER_cert(path.read_text())


class ReceiverWithoutStarttlsTest(MxgateReceiverTest):
    config = {"listener": [{"tls": "none"}]}

    def test_may_delivers_in_cleartext(self):
        msg = h.make_message(subject="no-starttls")
        r = self.send(self.server.port, "may", msg)
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertEqual(r.tls, "cleartext")
        self.delivered(msg)

    def test_encrypt_and_dane_fail(self):
        for level, records in (("encrypt", []), ("dane", [tlsa(3, 1, 1, "ecdsa")]), ("verify", [])):
            r = self.send(self.server.port, level, h.make_message(), tlsa_records=records)
            self.assertTrue(r.failed, f"{level}: {r}")
            self.assertEqual(r.error, "STARTTLS not offered", level)
            self.assertEqual(r.results(), {}, level)
        self.assert_none_stored()


# --------------------------------------------------------------------------
# (b), (c) man in the middle


class ManInTheMiddleTest(MxgateReceiverTest):
    def relay(self, server_filter) -> Relay:
        relay = Relay(self.server.port, server_filter)
        self.addCleanup(relay.close)
        return relay

    def test_stripped_starttls_fails_dane_and_encrypt(self):
        relay = self.relay(strip_starttls)
        for level, records in (("dane", [tlsa(3, 1, 1, "ecdsa"), tlsa(3, 1, 1, "rsa")]), ("encrypt", [])):
            r = self.send(relay.port, level, h.make_message(subject=f"strip-{level}"), tlsa_records=records)
            self.assertTrue(r.failed, f"{level}: {r}")
            self.assertEqual(r.error, "STARTTLS not offered", level)
            self.assertEqual(r.results(), {}, level)
        self.assertGreaterEqual(relay.state.get("stripped", 0), 2, "the relay never saw STARTTLS to strip")
        self.assertNotIn(b"MAIL FROM", relay.client_data.upper())
        self.assertNotIn(b"STARTTLS", relay.client_data.upper())
        self.assert_none_stored()

    def test_stripped_starttls_under_may_is_cleartext(self):
        # The known limit of opportunistic TLS (RFC 7435): an active attacker downgrades it.
        relay = self.relay(strip_starttls)
        r = self.send(relay.port, "may", h.make_message(subject="strip-may"))
        self.assertDelivered(r, ["rcpt@example.test"])
        self.assertEqual(r.tls, "cleartext")

    def test_injected_reply_after_starttls_is_discarded(self):
        for level, records in (("may", []), ("dane", [tlsa(3, 1, 1, "ecdsa"), tlsa(3, 1, 1, "rsa")])):
            relay = self.relay(inject_after_starttls)
            msg = h.make_message(subject=f"inject-{level}", body=DOTTY_BODY)
            r = self.send(relay.port, level, msg, to=["a@example.test", "b@example.test"],
                          tlsa_records=records)
            self.assertTrue(relay.state.get("injected"), "the relay never injected")
            self.assertDelivered(r, ["a@example.test", "b@example.test"])
            self.assertNotIn("injected", r.stdout)
            self.assertRegex(r.tls, DANE_EE if level == "dane" else ANONYMOUS)
            self.assertEqual(self.delivered(msg).content, h.lf(msg))
            self.assertIn("discarded 14 bytes sent after the STARTTLS 220", r.stderr)

    def test_late_injection_breaks_the_handshake_and_is_never_a_reply(self):
        relay = self.relay(inject_late_after_starttls)
        r = self.send(relay.port, "dane", h.make_message(subject="late-inject"),
                      tlsa_records=[tlsa(3, 1, 1, "ecdsa"), tlsa(3, 1, 1, "rsa")])
        self.assertTrue(relay.state.get("injected"), "the relay never injected")
        self.assertTrue(r.failed, r)
        self.assertTrue(r.error.startswith("TLS handshake failed: "), r)
        self.assertNotIn("injected", r.stdout)
        self.assertEqual(r.results(), {})
        self.assertNotIn(b"MAIL FROM", relay.client_data)
        self.assert_none_stored()


# --------------------------------------------------------------------------
# (d) scripted raw server


class ScriptedServerTest(ClientTestCase):
    def scripted(self, **script) -> ScriptedServer:
        server = ScriptedServer(**script)
        self.addCleanup(server.close)
        return server

    def test_per_recipient_results_pipelined(self):
        scripted = self.scripted(rcpt={"b@example.test": "550 5.1.1 <b@example.test>: No such user",
                               "c@example.test": "450 4.2.0 Greylisted, try later"})
        msg = h.make_message()
        r = self.send(scripted.port, "none", msg, to=["a@example.test", "b@example.test", "c@example.test"])
        self.assertFalse(r.failed, r)
        self.assertEqual(r.results(), {
            "a@example.test": (250, "250 2.0.0 Ok: queued as SCRIPTED1"),
            "b@example.test": (550, "550 5.1.1 <b@example.test>: No such user"),
            "c@example.test": (450, "450 4.2.0 Greylisted, try later"),
        })
        conn = scripted.connections[0]
        self.assertEqual(conn["commands"][1], f"MAIL FROM:<sender@client.example.test> SIZE={len(msg)}")
        self.assertEqual(conn["commands"][2:6], ["RCPT TO:<a@example.test>", "RCPT TO:<b@example.test>",
                                                 "RCPT TO:<c@example.test>", "DATA"])
        self.assertEqual(conn["commands"][-1], "QUIT")
        # RFC 2920: MAIL, the RCPTs and DATA were sent as one group.
        group = [b for b in conn["batches"] if b.startswith(b"MAIL FROM")]
        self.assertEqual(len(group), 1, conn["batches"])
        self.assertTrue(group[0].endswith(b"DATA\r\n"), group)

    def test_per_recipient_results_one_at_a_time(self):
        scripted = self.scripted(ehlo=["SIZE 1000000", "8BITMIME"],
                         rcpt={"b@example.test": "550 5.1.1 No such user"})
        r = self.send(scripted.port, "none", h.make_message(), to=["a@example.test", "b@example.test"])
        self.assertEqual(r.results(), {"a@example.test": (250, "250 2.0.0 Ok: queued as SCRIPTED1"),
                                       "b@example.test": (550, "550 5.1.1 No such user")})
        batches = [b for b in scripted.connections[0]["batches"] if b"RCPT" in b or b"MAIL" in b]
        self.assertTrue(all(b.count(b"\r\n") == 1 for b in batches), batches)

    def test_end_of_data_refusals(self):
        for reply in ("554 5.7.1 Message rejected as spam", "451 4.3.0 Temporary failure"):
            scripted = self.scripted(end_reply=reply, rcpt={"b@example.test": "550 5.1.1 No such user"})
            r = self.send(scripted.port, "none", h.make_message(), to=["a@example.test", "b@example.test"])
            self.assertFalse(r.failed, r)
            self.assertEqual(r.results(), {"a@example.test": (int(reply[:3]), reply),
                                           "b@example.test": (550, "550 5.1.1 No such user")})

    def test_all_recipients_refused_sends_no_content(self):
        scripted = self.scripted(rcpt={"a@example.test": "550 5.1.1 No", "b@example.test": "452 4.5.3 Too many"},
                         data_reply="554 5.5.1 No valid recipients")
        r = self.send(scripted.port, "none", h.make_message(), to=["a@example.test", "b@example.test"])
        self.assertEqual(r.results(), {"a@example.test": (550, "550 5.1.1 No"),
                                       "b@example.test": (452, "452 4.5.3 Too many")})
        self.assertEqual(scripted.connections[0]["data"], b"")

    def test_mail_refused(self):
        scripted = self.scripted(mail_reply="553 5.1.8 Sender address rejected", ehlo=["8BITMIME"])
        r = self.send(scripted.port, "none", h.make_message(), to=["a@example.test", "b@example.test"])
        expected = (553, "553 5.1.8 Sender address rejected")
        self.assertEqual(r.results(), {"a@example.test": expected, "b@example.test": expected})
        self.assertFalse(any(c.startswith("RCPT") for c in scripted.connections[0]["commands"]))

    def test_smtputf8_not_offered_is_refused_locally_without_mail(self):
        scripted = self.scripted(ehlo=["PIPELINING", "SIZE 1000000", "8BITMIME"])
        r = self.send(scripted.port, "none", h.make_message(), to=["ünï@example.test", "b@example.test"],
                      smtputf8=True)
        self.assertFalse(r.failed, r)
        expected = (553, f"553 5.6.7 SMTPUTF8 not supported by {HOSTNAME}")
        self.assertEqual(r.results(), {"ünï@example.test": expected, "b@example.test": expected})
        commands = scripted.connections[0]["commands"]
        self.assertEqual([c.split()[0] for c in commands], ["EHLO", "QUIT"], commands)

    def test_smtputf8_offered(self):
        scripted = self.scripted()
        r = self.send(scripted.port, "none", h.make_message(), to=["ünï@example.test"], smtputf8=True)
        self.assertEqual(r.results()["ünï@example.test"][0], 250, r)
        mail = scripted.connections[0]["commands"][1]
        self.assertTrue(mail.endswith(" SMTPUTF8"), mail)

    def test_size_limit_is_checked_before_mail(self):
        scripted = self.scripted(ehlo=["PIPELINING", "SIZE 100"])
        msg = h.make_message(body="x" * 500)
        r = self.send(scripted.port, "none", msg)
        self.assertEqual(r.results(), {"rcpt@example.test": (
            552, f"552 5.3.4 Message size {len(msg)} exceeds the size limit 100 of {HOSTNAME}")})
        self.assertFalse(any(c.startswith("MAIL") for c in scripted.connections[0]["commands"]))

    def test_dot_stuffing_on_the_wire(self):
        scripted = self.scripted()
        msg = b".A: b\r\nSubject: w\r\n\r\n.\r\n..\r\nx.y\r\n.z\r\n"
        r = self.send(scripted.port, "none", msg)
        self.assertEqual(r.results()["rcpt@example.test"][0], 250, r)
        self.assertEqual(scripted.connections[0]["data"],
                         b"..A: b\r\nSubject: w\r\n\r\n..\r\n...\r\nx.y\r\n..z\r\n.\r\n")

    def test_bad_greeting(self):
        scripted = self.scripted(greeting="554 5.7.1 No SMTP service here")
        r = self.send(scripted.port, "none", h.make_message())
        self.assertTrue(r.failed, r)
        self.assertEqual(r.error, "bad greeting: 554 5.7.1 No SMTP service here")
        self.assertEqual(r.results(), {})

    def test_ehlo_refused_falls_back_to_helo(self):
        scripted = self.scripted(ehlo=None)  # answers EHLO with 502
        r = self.send(scripted.port, "none", h.make_message())
        self.assertEqual(r.results()["rcpt@example.test"][0], 250, r)
        commands = scripted.connections[0]["commands"]
        self.assertEqual([c.split()[0] for c in commands][:3], ["EHLO", "HELO", "MAIL"], commands)
        self.assertEqual(commands[2], "MAIL FROM:<sender@client.example.test>")  # no extensions after HELO

    def test_starttls_not_offered_or_refused(self):
        scripted = self.scripted(ehlo=["PIPELINING"])
        r = self.send(scripted.port, "encrypt", h.make_message())
        self.assertEqual(r.error, "STARTTLS not offered")
        refusing = self.scripted(ehlo=["STARTTLS"], starttls_reply="454 4.7.0 TLS not available")
        r = self.send(refusing.port, "encrypt", h.make_message())
        self.assertTrue(r.failed, r)
        self.assertEqual(r.error, "STARTTLS refused: 454 4.7.0 TLS not available")
        r = self.send(refusing.port, "may", h.make_message())
        self.assertFalse(r.failed, r)
        self.assertEqual(r.tls, "cleartext")
        self.assertEqual(r.results()["rcpt@example.test"][0], 250, r)

    def test_starttls_reply_other_than_220_fails(self):
        scripted = self.scripted(ehlo=["STARTTLS"], starttls_reply="250 2.0.0 Go ahead")
        for level in ("may", "encrypt"):
            r = self.send(scripted.port, level, h.make_message())
            self.assertTrue(r.failed, f"{level}: {r}")
            self.assertIn("250 2.0.0 Go ahead", r.error)
            self.assertEqual(r.results(), {})

    def test_broken_handshake_under_may_retries_in_cleartext(self):
        scripted = self.scripted(ehlo=["PIPELINING", "STARTTLS"], after_starttls="garbage")
        r = self.send(scripted.port, "may", h.make_message())
        self.assertFalse(r.failed, r)
        self.assertEqual(r.tls, "cleartext")
        self.assertEqual(r.results()["rcpt@example.test"][0], 250, r)
        self.assertEqual(len(scripted.connections), 2, scripted.connections)
        self.assertIn("STARTTLS", scripted.connections[0]["commands"])
        self.assertNotIn("STARTTLS", scripted.connections[1]["commands"])
        self.assertIn("retrying in cleartext", r.stderr)

    def test_broken_handshake_under_encrypt_fails(self):
        scripted = self.scripted(ehlo=["PIPELINING", "STARTTLS"], after_starttls="close")
        r = self.send(scripted.port, "encrypt", h.make_message())
        self.assertTrue(r.failed, r)
        self.assertTrue(r.error.startswith("TLS handshake failed: "), r)
        self.assertEqual(len(scripted.connections), 1)
        self.assertFalse(any(c.startswith("MAIL") for c in scripted.connections[0]["commands"]))

    def test_silent_server_times_out(self):
        scripted = self.scripted(silent=True)
        started = time.monotonic()
        r = self.send(scripted.port, "none", h.make_message(), timeout=2)
        elapsed = time.monotonic() - started
        self.assertTrue(r.failed, r)
        self.assertEqual(r.error, "timeout while waiting for the greeting")
        self.assertLess(elapsed, 15, "the greeting timeout was not applied")

    def test_connection_refused(self):
        port = h.free_port()
        r = self.send(port, "none", h.make_message())
        self.assertTrue(r.failed, r)
        self.assertEqual(r.error, f"connect to 127.0.0.1:{port} failed: Connection refused")


if __name__ == "__main__":
    unittest.main()
