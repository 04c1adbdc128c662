"""STARTTLS and implicit TLS with real peers: swaks, openssl s_client, smtplib,
and raw sockets for the STARTTLS state machine (injection, reset, policy)."""

import re
import shutil
import smtplib
import ssl
import time
import unittest
import uuid

import mxgate_harness as h
from mxgate_harness import HOSTNAME, queue_id, session

AEAD_TLS13 = {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"}


class SClientResult:
    """What `openssl s_client` reports about the session it made."""

    def __init__(self, proc):
        self.returncode = proc.returncode
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")
        m = re.search(r"^New, (\S+), Cipher is (\S+)", self.out, re.M)
        self.protocol, self.cipher = (m.group(1), m.group(2)) if m else (None, None)
        m = re.search(r"^\s*Protocol\s*:\s*(\S+)", self.out, re.M)
        if m:
            self.protocol = m.group(1)
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", self.out, re.S)
        self.cert_der = ssl.PEM_cert_to_DER_cert(m.group(0)) if m else None

    @property
    def handshake_ok(self) -> bool:
        return self.cipher not in (None, "(NONE)")

    def __repr__(self):
        return f"s_client rc={self.returncode} protocol={self.protocol} cipher={self.cipher}\n" \
               f"stdout:\n{self.out[-3000:]}\nstderr:\n{self.err[-2000:]}"


def s_client(server: h.MxgateServer, *args: str, starttls: bool = True,
             stdin: bytes = b"QUIT\r\n") -> SClientResult:
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
           "-servername", HOSTNAME, "-ign_eof"]
    if starttls:
        cmd += ["-starttls", "smtp", "-name", "sclient.example.test"]
    cmd += list(args)
    return SClientResult(h.run(cmd, input=stdin, timeout=60))


class TlsTestCase(unittest.TestCase):
    config: dict = {}

    def setUp(self):
        self.server = h.start_server(self, self.config)

    def session(self, server=None, **kw) -> h.SmtpClient:
        c = session(server or self.server, **kw)
        self.addCleanup(c.close)
        return c

    def smtplib_client(self, server=None, helo="smtplib.example.test") -> smtplib.SMTP:
        s = smtplib.SMTP("127.0.0.1", (server or self.server).port, local_hostname=helo, timeout=30)
        self.addCleanup(s.close)
        return s

    def find_message(self, marker: bytes, server=None) -> h.Delivered:
        server = server or self.server
        deadline = time.monotonic() + h.DELIVERY_TIMEOUT
        while True:
            for m in server.messages():
                if marker in m.raw:
                    return m
            if time.monotonic() > deadline:
                self.fail(f"no delivered message contains {marker!r}; log:\n{server.log_text()[-3000:]}")
            time.sleep(0.05)


class PeersTest(TlsTestCase):
    def test_swaks_starttls_delivery(self):
        if not shutil.which("swaks"):
            self.fail("swaks is not installed (scripts/setup installs it)")
        marker = f"swaks-{uuid.uuid4().hex}"
        r = h.run(["swaks", "--server", f"127.0.0.1:{self.server.port}", "--tls",
                   "--helo", "swaks.example.test", "--from", "sender@swaks.example.test",
                   "--to", "rcpt@example.test", "--header", f"Subject: {marker}",
                   "--body", "Sent by swaks over STARTTLS.", "--timeout", "30"], timeout=90)
        self.assertEqual(r.returncode, 0, f"swaks failed:\n{r.stdout.decode()}\n{r.stderr.decode()}")
        m = self.find_message(marker.encode())
        rec = h.parse_received(m)
        self.assertEqual(rec.group("proto"), "ESMTPS")
        self.assertEqual(rec.group("helo"), "swaks.example.test")
        self.assertEqual(m.return_path, "<sender@swaks.example.test>")
        self.assertIn(b"Sent by swaks over STARTTLS.", m.content)

    def test_session_ticket_resumes_the_next_session(self):
        # The TLS 1.3 ticket travels with the first reply after the handshake
        # (tls::Stream holds it back for that): a client that read the EHLO
        # reply has it, and the next STARTTLS resumes with it.
        context = h.client_tls_context()
        c = self.session()
        self.assertEqual(c.starttls(context).code, 220)
        self.assertEqual(c.ehlo().code, 250)
        ticket = c.sock.session
        self.assertIsNotNone(ticket)
        self.assertFalse(c.sock.session_reused)
        self.assertEqual(c.command("QUIT").code, 221)
        c.close()

        again = self.session()
        self.assertEqual(again.command("STARTTLS").code, 220)
        again.sock = context.wrap_socket(again.sock, server_hostname=HOSTNAME, session=ticket)
        self.assertTrue(again.sock.session_reused)
        self.assertEqual(again.ehlo().code, 250)
        self.assertEqual(again.command("QUIT").code, 221)

    def test_close_notify_follows_the_last_reply(self):
        # After 221 the server says close_notify before closing: unwrap()
        # completes only when it arrives (a bare TCP close raises).
        c = self.session()
        self.assertEqual(c.starttls().code, 220)
        c.ehlo()
        self.assertEqual(c.command("QUIT").first, "221 2.0.0 Bye")
        c.sock.settimeout(10)
        c.sock.unwrap()

    def test_large_message_over_starttls_arrives_intact(self):
        # 3 MiB: many full TLS records each way, read three at a time.
        body = "".join(f"{'.' if i % 7 == 0 else ''}line {i} {'x' * (i % 70)}\r\n" for i in range(70000))
        marker = uuid.uuid4().hex
        content = h.make_message(subject=marker, body=body)
        self.assertGreater(len(content), 3 * 1024 * 1024)
        c = self.session()
        self.assertEqual(c.starttls().code, 220)
        c.ehlo()
        queue_id(c.send_message("a@example.test", ["b@example.test"], content))
        m = self.find_message(marker.encode())
        self.assertTrue(m.content.endswith(h.lf(content)), "content changed on the way")

    def test_s_client_tls13(self):
        r = s_client(self.server)
        self.assertEqual(r.protocol, "TLSv1.3", r)
        self.assertIn(r.cipher, AEAD_TLS13, r)
        self.assertIn("221 2.0.0 Bye", r.out, r)

    def test_s_client_tls13_server_preference(self):
        r = s_client(self.server, "-ciphersuites",
                     "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384")
        self.assertEqual(r.protocol, "TLSv1.3", r)
        self.assertEqual(r.cipher, "TLS_AES_256_GCM_SHA384", r)

    def test_s_client_tls12_server_prefers_aead(self):
        r = s_client(self.server, "-tls1_2", "-cipher",
                     "AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384")
        self.assertEqual(r.protocol, "TLSv1.2", r)
        self.assertIn(r.cipher, {"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"}, r)

    def test_ecdsa_certificate_by_default(self):
        r = s_client(self.server)
        self.assertTrue(r.handshake_ok, r)
        self.assertEqual(r.cert_der, h.cert_der("ecdsa"), "server did not present the ECDSA cert")
        r = s_client(self.server, "-tls1_2")
        self.assertEqual(r.cert_der, h.cert_der("ecdsa"), "TLS 1.2: server did not present the ECDSA cert")

    def test_rsa_certificate_for_rsa_only_sigalgs(self):
        r = s_client(self.server, "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
        self.assertTrue(r.handshake_ok, r)
        self.assertEqual(r.cert_der, h.cert_der("rsa"), "server did not present the RSA cert")

    def test_rsa_certificate_for_rsa_only_tls12_cipher(self):
        r = s_client(self.server, "-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384")
        self.assertEqual(r.protocol, "TLSv1.2", r)
        self.assertEqual(r.cipher, "ECDHE-RSA-AES256-GCM-SHA384", r)
        self.assertEqual(r.cert_der, h.cert_der("rsa"), "server did not present the RSA cert")

    def test_python_rsa_only_client(self):
        ctx = h.client_tls_context(maximum_version=ssl.TLSVersion.TLSv1_2,
                                   ciphers="ECDHE-RSA-AES256-GCM-SHA384")
        c = self.session()
        c.starttls(ctx)
        self.assertEqual(c.sock.getpeercert(binary_form=True), h.cert_der("rsa"))
        self.assertEqual(c.sock.cipher()[0], "ECDHE-RSA-AES256-GCM-SHA384")

    def test_certificate_verifies_for_hostname(self):
        c = self.session()
        c.starttls(h.client_tls_context(verify=True))
        self.assertEqual(c.sock.getpeercert(binary_form=True), h.cert_der("ecdsa"))

    def test_smtplib_starttls_sendmail(self):
        s = self.smtplib_client()
        s.ehlo()
        self.assertTrue(s.has_extn("starttls"))
        code, _ = s.starttls(context=h.client_tls_context(check_hostname=False))
        self.assertEqual(code, 220)
        s.ehlo()
        self.assertFalse(s.has_extn("starttls"), "STARTTLS still offered inside TLS")
        for kw in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8", "chunking"):
            self.assertTrue(s.has_extn(kw), kw)
        marker = f"smtplib-{uuid.uuid4().hex}"
        content = h.make_message(subject=marker)
        self.assertEqual(s.sendmail("a@example.test", ["b@example.test"], content), {})
        s.quit()
        m = self.find_message(marker.encode())
        self.assertEqual(m.content, h.lf(content))

    def test_tls12_client(self):
        ctx = h.client_tls_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        c = self.session()
        c.starttls(ctx)
        self.assertEqual(c.sock.version(), "TLSv1.2")
        self.assertIn("GCM", c.sock.cipher()[0])
        self.assertTrue(c.sock.cipher()[0].startswith("ECDHE-"), c.sock.cipher())


class StarttlsStateTest(TlsTestCase):
    def test_starttls_reply(self):
        c = self.session()
        r = c.command("STARTTLS")
        self.assertEqual(r.first, "220 2.0.0 Ready to start TLS")

    def test_injection_discarded(self):
        c = self.session()
        c.send(b"STARTTLS\r\nRSET\r\n")
        r = c.read_reply()
        self.assertEqual(r.first, "220 2.0.0 Ready to start TLS")
        self.assertEqual(c.buffer, b"", "more than the 220 arrived in cleartext")
        try:
            c.sock = h.client_tls_context().wrap_socket(c.sock, server_hostname=HOSTNAME)
        except ssl.SSLError as e:
            self.fail(f"handshake failed after pipelined STARTTLS (buffered bytes not discarded?): {e}")
        got = c.read_available(2.0)
        self.assertEqual(got, b"", "the server answered a command injected before the handshake")
        r = c.ehlo()
        self.assertEqual(r.code, 250, r)
        self.assertNotIn("STARTTLS", r.lines)

    def test_injected_mail_not_executed(self):
        c = self.session()
        c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.test>\r\n")
        self.assertEqual(c.read_reply().code, 220)
        c.sock = h.client_tls_context().wrap_socket(c.sock, server_hostname=HOSTNAME)
        self.assertEqual(c.read_available(1.0), b"")
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.command("RCPT TO:<b@example.test>").code, 503,
                         "a MAIL injected before the handshake is in effect")

    def test_state_reset_after_tls(self):
        c = self.session()
        c.starttls()
        r = c.command("MAIL FROM:<a@example.test>")
        self.assertEqual(r.code, 503, r)
        self.assertTrue(r.lines[0].startswith("5.5.1"), r)
        r = c.ehlo()
        self.assertNotIn("STARTTLS", r.lines)
        self.assertEqual(c.command("MAIL FROM:<a@example.test>").code, 250)

    def test_transaction_before_starttls_forgotten(self):
        c = self.session()
        self.assertEqual(c.command("MAIL FROM:<a@example.test>").code, 250)
        r = c.command("STARTTLS")
        if r.code != 220:
            return  # refusing STARTTLS inside a transaction is also fine
        c.sock = h.client_tls_context().wrap_socket(c.sock, server_hostname=HOSTNAME)
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.command("RCPT TO:<b@example.test>").code, 503)

    def test_second_starttls(self):
        c = self.session()
        c.starttls()
        c.ehlo()
        self.assertEqual(c.command("STARTTLS").first, "554 5.5.1 TLS already active")
        self.assertEqual(c.command("NOOP").code, 250)

    def test_starttls_with_argument(self):
        c = self.session()
        r = c.command("STARTTLS now")
        self.assertEqual(r.code, 501, r)

    def test_failed_handshake_logged_and_server_keeps_serving(self):
        offset = len(self.server.log_text())
        c = self.session(ehlo="broken.example.test")
        self.assertEqual(c.command("STARTTLS").code, 220)
        c.send(b"this is not a TLS ClientHello\r\n" * 4)
        self.assertTrue(c.wait_closed(20), "server did not close after a failed handshake")
        self.server.wait_for_log(r"(?i)^.*handshake.*(fail|error|alert).*$", start=offset)
        # The server is still there and does TLS fine.
        s = self.smtplib_client()
        s.starttls(context=h.client_tls_context(check_hostname=False))
        self.assertEqual(s.sendmail("a@example.test", ["b@example.test"], h.make_message()), {})
        self.assertTrue(self.server.alive())

    def test_abrupt_disconnect_during_handshake(self):
        for _ in range(5):
            c = self.session()
            self.assertEqual(c.command("STARTTLS").code, 220)
            c.send(h.tls_client_hello()[:50])
            c.close()
        c = self.session()
        c.starttls()
        self.assertEqual(c.ehlo().code, 250)


class HandshakeTimeoutTest(TlsTestCase):
    config = {"timeouts": {"tls_handshake": 2}}

    def test_handshake_timeout(self):
        c = self.session()
        self.assertEqual(c.command("STARTTLS").code, 220)
        self.assertTrue(c.wait_closed(20), "no handshake timeout")


class ReceivedAndLogTest(TlsTestCase):
    def send_over_tls(self, ctx, helo):
        c = self.session(ehlo=helo)
        c.starttls(ctx)
        c.ehlo(helo)
        version, cipher, bits = c.sock.version(), c.sock.cipher()[0], c.sock.cipher()[2]
        marker = uuid.uuid4().hex
        qid = queue_id(c.send_message("a@example.test", ["b@example.test"], h.make_message(subject=marker)))
        self.assertEqual(c.command("QUIT").code, 221)
        c.close()
        return version, cipher, bits, qid, self.find_message(marker.encode())

    def test_received_header_tls13(self):
        version, cipher, bits, qid, m = self.send_over_tls(h.client_tls_context(), "tls13.example.test")
        self.assertEqual(version, "TLSv1.3")
        rec = h.parse_received(m)
        self.assertEqual(rec.group("proto"), "ESMTPS")
        self.assertEqual(rec.group("id"), qid)
        self.assertEqual(rec.group("tlsver"), "TLSv1.3")
        self.assertEqual(rec.group("cipher"), cipher)
        self.assertEqual(int(rec.group("bits")), bits)
        self.assertIn(f"\n\t(using {version} with cipher {cipher} ({bits}/{bits} bits))\n\tfor <b@example.test>; ",
                      m.received_raw)
        self.assertEqual(cipher, "TLS_AES_256_GCM_SHA384")

    def test_received_header_tls12(self):
        ctx = h.client_tls_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        version, cipher, bits, _, m = self.send_over_tls(ctx, "tls12.example.test")
        rec = h.parse_received(m)
        self.assertEqual(rec.group("proto"), "ESMTPS")
        self.assertEqual((rec.group("tlsver"), rec.group("cipher")), ("TLSv1.2", cipher))
        self.assertEqual(int(rec.group("bits")), bits)

    def test_received_header_utf8smtps(self):
        c = self.session()
        c.starttls()
        c.ehlo()
        marker = uuid.uuid4().hex
        queue_id(c.send_message("jösé@exämple.test", ["b@example.test"],
                                h.make_message(subject=marker), mail_params="SMTPUTF8"))
        rec = h.parse_received(self.find_message(marker.encode()))
        self.assertEqual(rec.group("proto"), "UTF8SMTPS")

    def test_session_end_log_has_tls(self):
        offset = len(self.server.log_text())
        version, cipher, _, _, _ = self.send_over_tls(h.client_tls_context(), "logtls.example.test")
        line = self.server.wait_for_log(r"^.*session end:.*logtls\.example\.test.*$", start=offset).group(0)
        self.assertIn("127.0.0.1", line)
        self.assertIn(version, line)
        self.assertIn(cipher, line)
        self.assertNotIn("cleartext", line)


class EncryptPolicyTest(TlsTestCase):
    config = {"listener": [{"tls": "encrypt"}]}

    def test_must_starttls_first(self):
        c = self.session()
        r = c.ehlo()
        self.assertIn("STARTTLS", r.lines)
        for line in ("MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>", "DATA"):
            with self.subTest(line=line):
                self.assertEqual(c.command(line).first, "530 5.7.0 Must issue a STARTTLS command first")
        self.assertEqual(c.command("NOOP").code, 250)

    def test_fine_after_starttls(self):
        c = self.session()
        c.starttls()
        c.ehlo()
        marker = uuid.uuid4().hex
        queue_id(c.send_message("a@example.test", ["b@example.test"], h.make_message(subject=marker)))
        self.assertEqual(h.parse_received(self.find_message(marker.encode())).group("proto"), "ESMTPS")

    def test_smtplib_refused_without_tls(self):
        s = self.smtplib_client()
        s.ehlo()
        with self.assertRaises(smtplib.SMTPSenderRefused) as ctx:
            s.sendmail("a@example.test", ["b@example.test"], h.make_message())
        self.assertEqual(ctx.exception.smtp_code, 530)


class NonePolicyTest(TlsTestCase):
    config = {"listener": [{"tls": "none"}]}

    def test_no_starttls(self):
        c = self.session(ehlo=None)
        r = c.ehlo()
        self.assertNotIn("STARTTLS", r.lines)
        self.assertEqual(r.lines[-1], "CHUNKING")
        r = c.command("STARTTLS")
        self.assertEqual(r.code, 502, r)
        self.assertTrue(r.lines[0].startswith("5.5.1"), r)
        queue_id(c.send_message("a@example.test", ["b@example.test"], h.make_message()))


class ImplicitTlsTest(TlsTestCase):
    config = {"listener": [{"tls": "implicit"}, {"tls": "may"}]}

    def test_smtp_ssl(self):
        s = smtplib.SMTP_SSL("127.0.0.1", self.server.port, local_hostname="implicit.example.test",
                             timeout=30, context=h.client_tls_context(check_hostname=False))
        self.addCleanup(s.close)
        code, _ = s.ehlo()
        self.assertEqual(code, 250)
        self.assertFalse(s.has_extn("starttls"))
        marker = uuid.uuid4().hex
        self.assertEqual(s.sendmail("a@example.test", ["b@example.test"], h.make_message(subject=marker)), {})
        s.quit()
        m = self.find_message(marker.encode())
        rec = h.parse_received(m)
        self.assertEqual(rec.group("proto"), "ESMTPS")
        self.assertEqual(rec.group("helo"), "implicit.example.test")
        self.assertIsNotNone(rec.group("tlsver"))

    def test_greeting_and_starttls_inside_tls(self):
        c = self.session()
        self.assertIsNotNone(c.tls_version)
        self.assertEqual(c.command("STARTTLS").first, "554 5.5.1 TLS already active")

    def test_s_client_implicit(self):
        r = s_client(self.server, starttls=False, stdin=b"EHLO sclient.example.test\r\nQUIT\r\n")
        self.assertEqual(r.protocol, "TLSv1.3", r)
        self.assertIn(f"220 {HOSTNAME} ESMTP mxgate", r.out)
        self.assertIn("221 2.0.0 Bye", r.out)

    def test_cleartext_on_implicit_port(self):
        with h.SmtpClient(self.server.port) as c:
            c.send(b"EHLO cleartext.example.test\r\n")
            self.assertTrue(c.wait_closed(20), "cleartext client on the implicit port was not dropped")
        self.assertTrue(self.server.alive())

    def test_second_listener_is_starttls(self):
        c = self.session(listener=1)
        self.assertIn("STARTTLS", c.ehlo().lines)


class MinVersionTest(TlsTestCase):
    config = {"tls": {"min_version": "TLSv1.3"}}

    def test_tls12_refused(self):
        c = self.session()
        self.assertEqual(c.command("STARTTLS").code, 220)
        ctx = h.client_tls_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
            ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        c2 = self.session()
        c2.starttls()
        self.assertEqual(c2.tls_version, "TLSv1.3")


if __name__ == "__main__":
    unittest.main()
