"""SMTP smuggling and hostile input: bare CR/LF, NUL and control bytes, garbage,
over-long lines, a TLS ClientHello in cleartext.  After each test the server
must still be up and serve a clean session."""

import random
import time
import unittest

import mxgate_harness as h
from mxgate_harness import queue_id, session

SMUGGLING_ENDINGS = {
    "lf_dot_lf": b"\n.\n",
    "cr_dot_cr": b"\r.\r",
    "lf_dot_crlf": b"\n.\r\n",
    "crlf_dot_cr": b"\r\n.\r",
    "crlf_dot_lf": b"\r\n.\n",
}

SMUGGLED = (b"MAIL FROM:<smuggled@evil.test>\r\n"
            b"RCPT TO:<victim@example.test>\r\n"
            b"DATA\r\n"
            b"From: <ceo@example.test>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")


class BadInputTestCase(unittest.TestCase):
    config: dict = {}

    def setUp(self):
        self.server = h.start_server(self, self.config)
        self.addCleanup(self.assert_server_still_serves)

    def session(self, **kw) -> h.SmtpClient:
        c = session(self.server, **kw)
        self.addCleanup(c.close)
        return c

    def assert_server_still_serves(self):
        self.assertTrue(self.server.alive(), f"mxgate died; log:\n{self.server.log_text()[-3000:]}")
        with session(self.server) as c:
            before = len(self.server.maildir_files())
            queue_id(c.send_message("clean@example.test", ["clean@example.test"],
                                    h.make_message(subject="clean")))
            self.assertEqual(c.command("QUIT").code, 221)
        self.server.wait_for_messages(before + 1)

    def assert_no_smuggled_message(self):
        for m in self.server.messages():
            self.assertNotIn(b"smuggled", m.raw, f"smuggled content was delivered: {m}")
            self.assertNotIn(b"victim@", m.raw)
        for p in self.server.spool_files():
            self.assertNotIn(b"smuggled", p.read_bytes(), f"smuggled content was spooled: {p}")


class SmugglingTest(BadInputTestCase):
    def smuggle(self, ending: bytes, mode: str):
        c = self.session()
        self.assertEqual(c.command("MAIL FROM:<sender@example.test>").code, 250)
        self.assertEqual(c.command("RCPT TO:<rcpt@example.test>").code, 250)
        self.assertEqual(c.command("DATA").code, 354)
        head = b"From: <sender@example.test>\r\nSubject: innocent\r\n\r\nhello"
        tail = SMUGGLED + b".\r\n"
        if mode == "one_write":
            c.send(head + ending + tail)
        elif mode == "split_at_ending":
            c.send(head)
            time.sleep(0.05)
            c.send(ending)
            time.sleep(0.05)
            c.send(tail)
        else:  # byte_at_a_time around the ending
            c.send(head[:-2])
            for i, b in enumerate(head[-2:] + ending + tail[:40]):
                c.send(bytes([b]))
                if i % 3 == 0:
                    time.sleep(0.002)
            c.send(tail[40:])
        # Exactly one reply for the whole thing: 550 5.5.2, and nothing smuggled ran.
        r = c.read_reply()
        self.assertEqual(r.code, 550, f"{ending!r}/{mode}: got {r}")
        self.assertTrue(r.lines[0].startswith("5.5.2"), r)
        r = c.command("NOOP")
        self.assertEqual(r.first, "250 2.0.0 Ok",
                         f"{ending!r}/{mode}: a smuggled command was answered: {r}")
        # The transaction is over: no MAIL from the smuggled part is in effect.
        self.assertEqual(c.command("RCPT TO:<victim@example.test>").code, 503)
        self.assertEqual(c.command("QUIT").code, 221)

    def test_smuggling_variants(self):
        for name, ending in SMUGGLING_ENDINGS.items():
            for mode in ("one_write", "split_at_ending", "byte_at_a_time"):
                with self.subTest(ending=name, mode=mode):
                    self.smuggle(ending, mode)
        self.server.assert_nothing_stored(self)
        self.assert_no_smuggled_message()

    def test_smuggling_pipelined_with_bdat_transaction_after(self):
        # The smuggled part itself ends in a real terminator followed by more commands.
        c = self.session()
        c.send(b"MAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<smuggled@evil.test>\r\n"
               b"RCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n")
        r1, r2 = c.read_replies(2)
        self.assertEqual(r1.code, 550, r1)
        self.assertEqual(r2.first, "250 2.0.0 Ok", r2)
        self.server.assert_nothing_stored(self)

    def test_bare_lf_in_body(self):
        c = self.session()
        r = c.send_message("a@example.test", ["b@example.test"],
                           b"Subject: x\r\n\r\nline one\nline two\r\n")
        self.assertEqual(r.code, 550, r)
        self.assertTrue(r.lines[0].startswith("5.5.2"), r)
        self.server.assert_nothing_stored(self)

    def test_bare_cr_in_body(self):
        c = self.session()
        r = c.send_message("a@example.test", ["b@example.test"],
                           b"Subject: x\r\n\r\nline one\rline two\r\n")
        self.assertEqual(r.code, 550, r)
        self.assertTrue(r.lines[0].startswith("5.5.2"), r)
        self.server.assert_nothing_stored(self)

    def test_bare_lf_in_header(self):
        c = self.session()
        r = c.send_message("a@example.test", ["b@example.test"], b"Subject: x\nX-Other: y\r\n\r\nbody\r\n")
        self.assertEqual(r.code, 550, r)
        self.server.assert_nothing_stored(self)

    def test_real_terminator_split_at_every_offset(self):
        c = self.session()
        body = b"Subject: split\r\n\r\nbody text"
        wire = body + b"\r\n.\r\n"
        start = len(body) - 2
        for cut in range(start, len(wire)):
            with self.subTest(cut=cut):
                self.assertEqual(c.command("MAIL FROM:<a@example.test>").code, 250)
                self.assertEqual(c.command("RCPT TO:<b@example.test>").code, 250)
                self.assertEqual(c.command("DATA").code, 354)
                c.send(wire[:cut])
                time.sleep(0.05)
                c.send(wire[cut:])
                queue_id(c.read_reply())
        count = len(wire) - start
        msgs = self.server.wait_for_messages(count)
        for m in msgs:
            self.assertEqual(m.content, h.lf(body + b"\r\n"))


class BadCommandLineTest(BadInputTestCase):
    def assert_500_552(self, r: h.Reply, what):
        self.assertEqual(r.code, 500, f"{what!r}: {r}")
        self.assertTrue(r.lines[0].startswith("5.5.2"), f"{what!r}: {r}")

    def assert_whole_line_refused(self, wire: bytes):
        """WIRE holds a bare CR or LF inside what would be one command line:
        one 500 5.5.2, then the server hangs up (where the client meant the
        command to end is unknowable), so nothing after it is executed."""
        c = self.session()
        c.send(wire + b"RCPT TO:<b@example.test>\r\n")
        self.assert_500_552(c.read_reply(), wire)
        self.assertTrue(c.wait_closed(), f"connection still open after {wire!r}")
        # And the server is still fine for the next client.
        with self.session() as again:
            self.assertEqual(again.command("NOOP").first, "250 2.0.0 Ok")

    def test_bare_lf_in_command(self):
        self.assert_whole_line_refused(b"MAIL FROM:<a@example.test>\nRCPT TO:<b@example.test>\r\n")

    def test_bare_lf_hides_mail(self):
        self.assert_whole_line_refused(b"NOOP\nMAIL FROM:<x@example.test>\r\n")

    def test_bare_cr_in_command(self):
        self.assert_whole_line_refused(b"MAIL FROM:<a@example.test>\rRCPT TO:<b@example.test>\r\n")

    def test_bare_cr_hides_mail(self):
        self.assert_whole_line_refused(b"NOOP\rMAIL FROM:<x@example.test>\r\n")

    def test_lf_only_line_end(self):
        c = self.session()
        c.send(b"NOOP\n")
        c.send(b"NOOP\r\n")
        r = c.read_reply()
        self.assert_500_552(r, "NOOP\\n")
        self.assertTrue(c.wait_closed())

    def test_control_characters(self):
        c = self.session()
        for line in [b"NOOP\x00", b"NO\x00OP", b"MAIL FROM:<a\x00b@example.test>", b"EHLO fo\x01o",
                     b"NOOP \x1b[31m", b"RSET\x7f", b"\x00\x00\x00\x00"]:
            with self.subTest(line=line):
                self.assert_500_552(c.command(line), line)
                c.command("RSET")
        self.assertEqual(c.command("NOOP").first, "250 2.0.0 Ok")

    def test_line_at_limit_and_one_past(self):
        limit = 2048  # default max_command_line, CRLF included
        at_limit = b"NOOP " + b"x" * (limit - len(b"NOOP ") - 2)
        self.assertEqual(len(at_limit) + 2, limit)
        c = self.session()
        self.assertEqual(c.command(at_limit).first, "250 2.0.0 Ok")
        for extra in (1, 2, 100):
            with self.subTest(octets=limit + extra):
                c = self.session()
                self.assertEqual(c.command(at_limit + b"x" * extra).first, "500 5.5.2 Line too long")
                # The over-long line ends at its CRLF; the next line is a command again.
                self.assertEqual(c.command("NOOP", timeout=5).first, "250 2.0.0 Ok",
                                 "the line after an over-long line was swallowed")

    def test_huge_line(self):
        c = self.session()
        c.send(b"MAIL FROM:<" + b"a" * (1 << 20))
        c.send(b"@example.test>\r\n")
        self.assertEqual(c.read_reply().first, "500 5.5.2 Line too long")
        # The rest of the long line was discarded, not taken as a command.
        self.assertEqual(c.command("NOOP").first, "250 2.0.0 Ok")
        self.assertEqual(c.command("RCPT TO:<b@example.test>").code, 503)

    def test_huge_line_in_small_writes(self):
        c = self.session()
        for _ in range(64):
            c.send(b"A" * 1024)
        c.send(b"\r\nNOOP\r\n")
        self.assertEqual(c.read_reply().first, "500 5.5.2 Line too long")
        self.assertEqual(c.read_reply().first, "250 2.0.0 Ok")

    def test_configured_line_limit(self):
        # 512 is the smallest limit RFC 5321 section 4.5.3.1.4 allows.
        server = h.start_server(self, {"limits": {"max_command_line": 512}})
        with session(server) as c:
            self.assertEqual(c.command(b"NOOP " + b"y" * 505).code, 250)
            self.assertEqual(c.command(b"NOOP " + b"y" * 506).first, "500 5.5.2 Line too long")
            self.assertEqual(c.command(b"NOOP", timeout=5).code, 250,
                             "the line after an over-long line was swallowed")


class GarbageTest(BadInputTestCase):
    def test_binary_garbage(self):
        rng = random.Random(5321)
        for round_ in range(3):
            with self.subTest(round=round_), self.server.client() as c:
                c.greeting()
                garbage = bytes(rng.getrandbits(8) for _ in range(64 * 1024))
                try:
                    c.send(garbage + b"\r\n")
                except OSError:
                    pass  # the server may close early
                # Every reply must be well formed; the server closes or keeps reading.
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    try:
                        r = c.read_reply(timeout=3)
                    except (h.ConnectionClosed, h.ReplyTimeout):
                        break
                    self.assertIn(r.code, (421, 500, 501, 502, 503, 504, 550, 552, 555), r)
                    if r.code == 421:
                        break

    def test_garbage_lines(self):
        rng = random.Random(1870)
        c = self.session()
        for _ in range(5):
            line = bytes(rng.choice(range(0x21, 0x7f)) for _ in range(rng.randint(1, 200)))
            if line.upper().startswith((b"QUIT", b"NOOP", b"RSET", b"HELP", b"VRFY", b"EHLO", b"HELO")):
                continue
            r = c.command(line)
            self.assertGreaterEqual(r.code, 500, f"{line!r}: {r}")


class ClientHelloInCleartextTest(BadInputTestCase):
    def assert_refused_and_closed(self, c: h.SmtpClient):
        r = c.read_reply(timeout=15)
        self.assertEqual(r.code, 500, r)
        self.assertTrue(r.lines[0].startswith("5.5.2"), r)
        self.assertTrue(c.wait_closed(15), "connection not closed after a cleartext ClientHello")

    def test_client_hello_after_greeting(self):
        with self.server.client() as c:
            c.greeting()
            c.send(h.tls_client_hello())
            self.assert_refused_and_closed(c)

    def test_client_hello_after_ehlo(self):
        c = self.session()
        c.send(h.tls_client_hello())
        self.assert_refused_and_closed(c)

    def test_client_hello_before_greeting(self):
        with self.server.client() as c:
            c.send(h.tls_client_hello())
            r = c.read_reply(timeout=15)
            if r.code == 220:
                r = c.read_reply(timeout=15)
            self.assertEqual(r.code, 500, r)
            self.assertTrue(c.wait_closed(15))

    def test_client_hello_on_tls_none_listener(self):
        server = h.start_server(self, {"listener": [{"tls": "none"}]})
        with server.client() as c:
            c.greeting()
            c.send(h.tls_client_hello())
            self.assert_refused_and_closed(c)


if __name__ == "__main__":
    unittest.main()
