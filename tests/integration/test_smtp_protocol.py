"""The cleartext SMTP dialogue over a raw socket, and what lands in the maildir."""

import time
import unittest

import mxgate_harness as h
from mxgate_harness import HOSTNAME, CLIENT_HELO, lf, queue_id, session


class ProtocolTestCase(unittest.TestCase):
    config: dict = {}

    def setUp(self):
        self.server = h.start_server(self, self.config)

    def session(self, ehlo=CLIENT_HELO, **kw) -> h.SmtpClient:
        c = session(self.server, ehlo, **kw)
        self.addCleanup(c.close)
        return c

    def assertReply(self, reply: h.Reply, code: int, prefix: str = ""):
        self.assertEqual(reply.code, code, f"got {reply}")
        if prefix:
            self.assertTrue(reply.lines[0].startswith(prefix), f"expected '{code} {prefix}...', got {reply}")

    def cmd(self, c: h.SmtpClient, line, code: int, prefix: str = "") -> h.Reply:
        r = c.command(line)
        self.assertReply(r, code, prefix)
        return r

    def one_message(self):
        msgs = self.server.wait_for_messages(1)
        self.assertEqual(len(msgs), 1, msgs)
        return msgs[0]


class GreetingAndEhloTest(ProtocolTestCase):
    def test_greeting(self):
        with self.server.client() as c:
            r = c.greeting()
            self.assertEqual(r.code, 220)
            self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP mxgate"])

    def test_ehlo_keywords(self):
        c = self.session(ehlo=None)
        r = c.ehlo()
        self.assertEqual(r.code, 250, r)
        self.assertEqual(r.lines[0], HOSTNAME)
        self.assertEqual(r.lines[-1], "CHUNKING")
        self.assertCountEqual(r.lines[1:], h.EHLO_KEYWORDS)
        self.assertEqual(r.lines[1:], h.EHLO_KEYWORDS, "keyword order differs from the spec")

    def test_ehlo_lowercase_command(self):
        c = self.session(ehlo=None)
        self.assertReply(c.command("ehlo client.example.test"), 250)
        self.cmd(c, "mail from:<a@example.test>", 250, "2.1.0 Ok")
        self.cmd(c, "rcpt to:<b@example.test>", 250, "2.1.5 Ok")

    def test_ehlo_address_literal(self):
        c = self.session(ehlo=None)
        self.assertReply(c.command("EHLO [127.0.0.1]"), 250)

    def test_helo(self):
        c = self.session(ehlo=None)
        r = c.command("HELO client.example.test")
        self.assertEqual(r.code, 250, r)
        self.assertEqual(r.lines, [HOSTNAME])
        self.cmd(c, "MAIL FROM:<a@example.test>", 250, "2.1.0 Ok")

    def test_second_ehlo_resets_transaction(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<b@example.test>", 250)
        self.assertReply(c.ehlo(), 250)
        self.cmd(c, "DATA", 503, "5.5.1")
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)


class SizeKeywordTest(ProtocolTestCase):
    config = {"limits": {"max_message_size": 1000}}

    def test_size_reflects_config(self):
        c = self.session(ehlo=None)
        r = c.ehlo()
        self.assertIn("SIZE 1000", r.lines)


class CommandRepliesTest(ProtocolTestCase):
    def test_mail_rcpt_data_replies(self):
        c = self.session()
        r = self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.assertEqual(r.first, "250 2.1.0 Ok")
        r = self.cmd(c, "RCPT TO:<b@example.test>", 250)
        self.assertEqual(r.first, "250 2.1.5 Ok")
        r = self.cmd(c, "DATA", 354)
        self.assertEqual(r.first, "354 End data with <CR><LF>.<CR><LF>")
        c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        r = c.read_reply()
        h.queue_id(r)

    def test_rset(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<b@example.test>", 250)
        r = self.cmd(c, "RSET", 250)
        self.assertEqual(r.first, "250 2.0.0 Ok")
        self.cmd(c, "DATA", 503, "5.5.1")
        self.cmd(c, "RCPT TO:<b@example.test>", 503, "5.5.1")
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)

    def test_noop(self):
        c = self.session(ehlo=None)
        self.assertEqual(c.command("NOOP").first, "250 2.0.0 Ok")
        c.ehlo()
        self.assertEqual(c.command("NOOP").first, "250 2.0.0 Ok")
        self.assertEqual(c.command("NOOP some argument").first, "250 2.0.0 Ok")

    def test_rset_before_ehlo(self):
        c = self.session(ehlo=None)
        self.assertEqual(c.command("RSET").first, "250 2.0.0 Ok")

    def test_quit(self):
        c = self.session()
        r = c.command("QUIT")
        self.assertEqual(r.first, "221 2.0.0 Bye")
        self.assertTrue(c.wait_closed(10), "connection not closed after QUIT")

    def test_vrfy(self):
        c = self.session()
        self.cmd(c, "VRFY postmaster", 252, "2.5.0")

    def test_help(self):
        c = self.session()
        self.cmd(c, "HELP", 214, "2.0.0")

    def test_unknown_command(self):
        c = self.session()
        r = c.command("FROBNICATE now")
        self.assertEqual(r.first, "500 5.5.2 Command unrecognized")
        self.cmd(c, "NOOP", 250)

    def test_mail_before_ehlo(self):
        c = self.session(ehlo=None)
        self.cmd(c, "MAIL FROM:<a@example.test>", 503, "5.5.1")

    def test_rcpt_before_mail(self):
        c = self.session()
        self.cmd(c, "RCPT TO:<b@example.test>", 503, "5.5.1")

    def test_data_before_rcpt(self):
        c = self.session()
        self.cmd(c, "DATA", 503, "5.5.1")
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "DATA", 503, "5.5.1")

    def test_nested_mail(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "MAIL FROM:<c@example.test>", 503, "5.5.1")

    def test_bdat_before_rcpt(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        c.send(b"BDAT 3 LAST\r\nabc")
        self.assertReply(c.read_reply(), 503, "5.5.1")
        self.cmd(c, "NOOP", 250)

    def test_bad_sender_syntax(self):
        c = self.session()
        for bad in ["MAIL FROM:<a@example.test", "MAIL FROM:<a@b@example.test>",
                    "MAIL FROM:<foo bar@example.test>", "MAIL FROM:<a@exa mple.test>",
                    "MAIL FROM:<<a@example.test>>"]:
            with self.subTest(bad=bad):
                self.cmd(c, bad, 501, "5.1.7")
                self.cmd(c, "RSET", 250)

    def test_bad_recipient_syntax(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        for bad in ["RCPT TO:<b@example.test", "RCPT TO:<b@c@example.test>",
                    "RCPT TO:<foo bar@example.test>", "RCPT TO:<>"]:
            with self.subTest(bad=bad):
                self.cmd(c, bad, 501, "5.1.3")
        self.cmd(c, "RCPT TO:<b@example.test>", 250)

    def test_null_sender_accepted(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<>", 250, "2.1.0")
        self.cmd(c, "RCPT TO:<b@example.test>", 250)
        self.cmd(c, "DATA", 354)
        c.send(b"Subject: bounce\r\n\r\nbody\r\n.\r\n")
        queue_id(c.read_reply())
        self.assertEqual(self.one_message().return_path, "<>")

    def test_unsupported_parameters(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test> FOO=BAR", 555, "5.5.4")
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<b@example.test> NOTIFY=NEVER", 555, "5.5.4")
        self.cmd(c, "RCPT TO:<b@example.test>", 250)

    def test_multiple_transactions_in_one_session(self):
        c = self.session()
        ids = []
        for i in range(3):
            ids.append(queue_id(c.send_message("a@example.test", [f"r{i}@example.test"],
                                               h.make_message(subject=f"n{i}"))))
        self.assertEqual(len(set(ids)), 3, ids)
        msgs = self.server.wait_for_messages(3)
        self.assertEqual(sorted(m.delivered_to[0] for m in msgs),
                         ["r0@example.test", "r1@example.test", "r2@example.test"])


class PipeliningTest(ProtocolTestCase):
    def test_pipelined_group(self):
        c = self.session()
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
               b"RCPT TO:<c@example.test>\r\nDATA\r\n")
        rs = c.read_replies(4)
        self.assertEqual([r.first for r in rs],
                         ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
                          "354 End data with <CR><LF>.<CR><LF>"])
        c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        queue_id(c.read_reply())
        self.assertEqual(c.read_reply().first, "221 2.0.0 Bye")
        msgs = self.server.wait_for_messages(1)
        delivered = sorted(addr for m in msgs for addr in m.delivered_to)
        self.assertEqual(delivered, ["b@example.test", "c@example.test"])

    def test_pipelined_with_failing_rcpt(self):
        c = self.session()
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<bad\r\n"
               b"RCPT TO:<c@example.test>\r\nDATA\r\n")
        rs = c.read_replies(4)
        self.assertEqual([r.code for r in rs], [250, 501, 250, 354], rs)

    def test_pipelined_no_valid_rcpt(self):
        c = self.session()
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<bad\r\nDATA\r\nNOOP\r\n")
        rs = c.read_replies(4)
        # RFC 5321 section 3.3 allows 503 or 554 ("no valid recipients") here.
        self.assertIn(rs[2].code, (503, 554), rs)
        self.assertEqual([rs[0].code, rs[1].code, rs[3].code], [250, 501, 250], rs)

    def test_pipelined_whole_session(self):
        with self.server.client() as c:
            c.send(b"EHLO pipe.example.test\r\nMAIL FROM:<a@example.test>\r\n"
                   b"RCPT TO:<b@example.test>\r\nDATA\r\n")
            rs = c.read_replies(5)
            self.assertEqual([r.code for r in rs], [220, 250, 250, 250, 354], rs)
            c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<a2@example.test>\r\n"
                   b"RCPT TO:<b2@example.test>\r\nDATA\r\n")
            rs = c.read_replies(4)
            self.assertEqual([r.code for r in rs], [250, 250, 250, 354], rs)
            c.send(b"Subject: q\r\n\r\nbody 2\r\n.\r\nQUIT\r\n")
            rs = c.read_replies(2)
            self.assertEqual([r.code for r in rs], [250, 221], rs)
        self.server.wait_for_messages(2)


class ContentTest(ProtocolTestCase):
    def test_stored_message_exact(self):
        c = self.session(ehlo="exact.example.test")
        content = (b"From: <a@example.test>\r\nTo: <b@example.test>\r\nSubject: exact\r\n"
                   b"Message-ID: <exact-1@client.example.test>\r\n\r\n"
                   b"line one\r\n"
                   b".leading dot\r\n"
                   b"..two dots\r\n"
                   b"..\r\n"
                   b" .space dot\r\n"
                   b"trailing dot.\r\n"
                   b"\r\n"
                   b"last line\r\n")
        wire = (b"From: <a@example.test>\r\nTo: <b@example.test>\r\nSubject: exact\r\n"
                b"Message-ID: <exact-1@client.example.test>\r\n\r\n"
                b"line one\r\n"
                b"..leading dot\r\n"
                b"...two dots\r\n"
                b"...\r\n"
                b" .space dot\r\n"
                b"trailing dot.\r\n"
                b"\r\n"
                b"last line\r\n")
        self.assertEqual(h.dot_stuff(content), wire)
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<b@example.test>", 250)
        self.cmd(c, "DATA", 354)
        c.send(wire + b".\r\n")
        qid = queue_id(c.read_reply())
        m = self.one_message()
        self.assertEqual(m.return_path, "<a@example.test>")
        self.assertEqual(m.delivered_to, ["b@example.test"])
        rec = h.parse_received(m)
        self.assertEqual(rec.group("helo"), "exact.example.test")
        self.assertEqual(rec.group("ip"), "127.0.0.1")
        self.assertEqual(rec.group("host"), HOSTNAME)
        self.assertEqual(rec.group("proto"), "ESMTP")
        self.assertEqual(rec.group("id"), qid)
        self.assertIsNone(rec.group("tlsver"), "cleartext message has a using-line")
        self.assertEqual(rec.group("rcpt"), "b@example.test")
        self.assertTrue(m.received_raw.startswith(
            f"Received: from exact.example.test ([127.0.0.1])\n\tby {HOSTNAME} (mxgate) with ESMTP id {qid}\n\tfor <b@example.test>; "),
            m.received_raw)
        self.assertEqual(m.content, lf(content))
        self.assertNotIn(b"\r", m.raw)

    def test_empty_body(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<b@example.test>", 250)
        self.cmd(c, "DATA", 354)
        c.send(b".\r\n")
        queue_id(c.read_reply())
        self.assertEqual(self.one_message().content, b"")

    def test_helo_protocol_smtp(self):
        c = self.session(ehlo=None)
        self.cmd(c, "HELO old.example.test", 250)
        queue_id(c.send_message("a@example.test", ["b@example.test"], h.make_message()))
        rec = h.parse_received(self.one_message())
        self.assertEqual(rec.group("proto"), "SMTP")
        self.assertEqual(rec.group("helo"), "old.example.test")

    def test_multiple_recipients(self):
        c = self.session()
        rcpts = ["r1@example.test", "r2@example.test", "r3@example.test"]
        content = h.make_message(subject="multi")
        queue_id(c.send_message("a@example.test", rcpts, content))
        deadline = time.monotonic() + h.DELIVERY_TIMEOUT
        while True:
            msgs = self.server.messages()
            got = sorted(addr for m in msgs for addr in m.delivered_to)
            if got == rcpts or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(got, rcpts)
        for m in msgs:
            self.assertEqual(m.content, lf(content))
            rec = h.parse_received(m)
            self.assertIsNone(rec.group("rcpt"), "for <rcpt> only with exactly one recipient")

    def test_8bitmime(self):
        c = self.session()
        content = ("Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße, naïve café ✓\r\n").encode() \
            + b"latin1 \xe9\xe8\r\n"
        qid = queue_id(c.send_message("a@example.test", ["b@example.test"], content,
                                      mail_params="BODY=8BITMIME"))
        m = self.one_message()
        self.assertEqual(m.content, lf(content))
        self.assertEqual(h.parse_received(m).group("id"), qid)

    def test_body_7bit_param(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test> BODY=7BIT", 250)

    def test_smtputf8(self):
        c = self.session()
        sender = "jösé@exämple.test"
        rcpt = "用户@例子.测试"
        self.cmd(c, f"MAIL FROM:<{sender}>", 553, "5.6.7")
        self.cmd(c, f"MAIL FROM:<{sender}> SMTPUTF8", 250, "2.1.0")
        self.cmd(c, f"RCPT TO:<{rcpt}>", 250, "2.1.5")
        self.cmd(c, "DATA", 354)
        content = f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: ünïcode\r\n\r\nbody ✓\r\n".encode()
        c.send(content + b".\r\n")
        queue_id(c.read_reply())
        m = self.one_message()
        self.assertEqual(m.return_path, f"<{sender}>")
        self.assertEqual(m.delivered_to, [rcpt])
        self.assertEqual(h.parse_received(m).group("proto"), "UTF8SMTP")
        self.assertEqual(m.content, lf(content))

    def test_non_ascii_rcpt_without_smtputf8(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<用户@例子.测试>", 553, "5.6.7")
        self.cmd(c, "RCPT TO:<b@example.test>", 250)


class SizeLimitTest(ProtocolTestCase):
    LIMIT = 2000
    config = {"limits": {"max_message_size": LIMIT}}

    def test_size_parameter(self):
        c = self.session()
        self.assertEqual(c.command(f"MAIL FROM:<a@example.test> SIZE={self.LIMIT + 1}").first,
                         "552 5.3.4 Message size exceeds fixed limit")
        self.cmd(c, f"MAIL FROM:<a@example.test> SIZE={self.LIMIT}", 250, "2.1.0")

    def test_size_parameter_huge(self):
        c = self.session()
        # RFC 1870: size-value is 1*20DIGIT, so 20 nines is valid syntax (and beyond uint64).
        self.cmd(c, "MAIL FROM:<a@example.test> SIZE=99999999999999999999", 552, "5.3.4")
        self.cmd(c, "MAIL FROM:<a@example.test> SIZE=18446744073709551616", 552, "5.3.4")

    def data_of_size(self, n: int) -> bytes:
        head = b"Subject: size\r\n\r\n"
        filler = n - len(head) - 2
        body = b"".join(b"x" * 70 + b"\r\n" for _ in range(filler // 72))
        body += b"y" * (filler - len(body))
        content = head + body + b"\r\n"
        assert len(content) == n
        return content

    def test_data_at_limit_accepted(self):
        c = self.session()
        content = self.data_of_size(self.LIMIT)
        queue_id(c.send_message("a@example.test", ["b@example.test"], content))
        self.assertEqual(self.one_message().content, lf(content))

    def test_data_over_limit_rejected_not_stored(self):
        c = self.session()
        r = c.send_message("a@example.test", ["b@example.test"], self.data_of_size(self.LIMIT + 1))
        self.assertReply(r, 552, "5.3.4")
        r = c.send_message("a@example.test", ["b@example.test"], self.data_of_size(self.LIMIT * 50))
        self.assertReply(r, 552, "5.3.4")
        # The session goes on and a small message still works.
        self.cmd(c, "NOOP", 250)
        queue_id(c.send_message("a@example.test", ["ok@example.test"], h.make_message()))
        msgs = self.server.wait_for_messages(1)
        time.sleep(1.0)
        msgs = self.server.messages()
        self.assertEqual([m.delivered_to for m in msgs], [["ok@example.test"]])

    def test_bdat_over_limit_rejected_not_stored(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<b@example.test>", 250)
        chunk = b"z" * 1000 + b"\r\n"
        codes = []
        for i in range(4):
            c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
            codes.append(c.read_reply())
        c.send(b"BDAT 0 LAST\r\n")
        codes.append(c.read_reply())
        self.assertTrue(any(r.code == 552 and r.lines[0].startswith("5.3.4") for r in codes), codes)
        self.assertFalse(any(h.QUEUED.match(r.lines[-1]) for r in codes), codes)
        self.cmd(c, "RSET", 250)
        self.server.assert_nothing_stored(self)


class RecipientLimitTest(ProtocolTestCase):
    config = {"limits": {"max_recipients": 3}}

    def test_max_recipients(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        for i in range(3):
            self.cmd(c, f"RCPT TO:<r{i}@example.test>", 250)
        self.assertEqual(c.command("RCPT TO:<r3@example.test>").first, "452 4.5.3 Too many recipients")
        self.cmd(c, "DATA", 354)
        c.send(b"Subject: three\r\n\r\nx\r\n.\r\n")
        queue_id(c.read_reply())
        deadline = time.monotonic() + h.DELIVERY_TIMEOUT
        while time.monotonic() < deadline:
            got = sorted(a for m in self.server.messages() for a in m.delivered_to)
            if len(got) >= 3:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        got = sorted(a for m in self.server.messages() for a in m.delivered_to)
        self.assertEqual(got, ["r0@example.test", "r1@example.test", "r2@example.test"])


class BdatTest(ProtocolTestCase):
    def start_txn(self, c):
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<b@example.test>", 250)

    def test_bdat_chunks(self):
        c = self.session()
        self.start_txn(c)
        part1 = b"Subject: chunked\r\n\r\n"
        part2 = b"..dots stay\r\n.\r\nnot the end\r\n"
        c.send(f"BDAT {len(part1)}\r\n".encode() + part1)
        self.assertEqual(c.read_reply().first, f"250 2.0.0 {len(part1)} octets received")
        c.send(f"BDAT {len(part2)}\r\n".encode() + part2)
        self.assertEqual(c.read_reply().first, f"250 2.0.0 {len(part2)} octets received")
        c.send(b"BDAT 0 LAST\r\n")
        qid = queue_id(c.read_reply())
        m = self.one_message()
        self.assertEqual(m.content, lf(part1 + part2))
        self.assertEqual(h.parse_received(m).group("id"), qid)

    def test_bdat_single_last_chunk(self):
        c = self.session()
        self.start_txn(c)
        content = b"Subject: one\r\n\r\nhello\r\n"
        c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        queue_id(c.read_reply())
        self.assertEqual(self.one_message().content, lf(content))

    def test_bdat_split_across_writes(self):
        c = self.session()
        self.start_txn(c)
        content = b"Subject: split\r\n\r\n" + b"0123456789" * 50 + b"\r\n"
        wire = f"BDAT {len(content)} LAST\r\n".encode() + content
        for cut in range(0, len(wire), 37):
            c.send(wire[cut:cut + 37])
            time.sleep(0.01)
        queue_id(c.read_reply())
        self.assertEqual(self.one_message().content, lf(content))

    def test_bdat_byte_at_a_time(self):
        c = self.session()
        self.start_txn(c)
        content = b"Subject: bytes\r\n\r\nabc\r\n"
        wire = f"BDAT 10\r\n".encode() + content[:10] + f"BDAT {len(content) - 10} LAST\r\n".encode() + content[10:]
        for i in range(len(wire)):
            c.send(wire[i:i + 1])
        self.assertEqual(c.read_reply().first, "250 2.0.0 10 octets received")
        queue_id(c.read_reply())
        self.assertEqual(self.one_message().content, lf(content))

    def test_bdat_pipelined_chunks(self):
        c = self.session()
        head, body = b"Subject: pipelined\r\n\r\n", b"body\r\n"
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
               + f"BDAT {len(head)}\r\n".encode() + head
               + f"BDAT {len(body)} LAST\r\n".encode() + body + b"NOOP\r\n")
        rs = c.read_replies(5)
        self.assertEqual([r.code for r in rs], [250, 250, 250, 250, 250], rs)
        self.assertEqual(rs[2].first, f"250 2.0.0 {len(head)} octets received")
        queue_id(rs[3])
        self.assertEqual(rs[4].first, "250 2.0.0 Ok")
        self.assertEqual(self.one_message().content, lf(head + body))

    def test_bdat_bad_size(self):
        c = self.session()
        self.start_txn(c)
        r = c.command("BDAT abc")
        self.assertEqual(r.code, 501, r)
        # The chunk length is unknown, so closing here is as fine as going on.
        try:
            self.cmd(c, "NOOP", 250)
        except h.ConnectionClosed:
            pass


class ErrorLimitTest(ProtocolTestCase):
    config = {"limits": {"max_errors": 3}}

    def errors_until_421(self, c, lines):
        """Sends each line; stops at a 421 or when the server closes."""
        replies = []
        for line in lines:
            try:
                c.send(line.encode() + b"\r\n")
            except OSError:
                pass  # closed already: a 421 may still be in the receive buffer
            try:
                replies.append(c.read_reply(timeout=10))
            except h.ConnectionClosed:
                break
            if replies[-1].code == 421:
                break
        return replies

    def test_too_many_errors(self):
        c = self.session()
        replies = self.errors_until_421(c, [f"BOGUS{i}" for i in range(5)])
        codes = [r.code for r in replies]
        self.assertIn(421, codes, replies)
        self.assertGreaterEqual(codes.index(421), 2, f"421 before max_errors errors: {replies}")
        self.assertLessEqual(codes.index(421), 3, f"421 only after more than max_errors errors: {replies}")
        self.assertEqual(replies[-1].first,
                         f"421 4.7.0 {HOSTNAME} Too many errors, closing connection")
        self.assertTrue(c.wait_closed(10), "not closed after 421")

    def test_errors_of_all_kinds_count(self):
        c = self.session()
        replies = self.errors_until_421(c, ["RCPT TO:<b@example.test>", "MAIL FROM:<bad", "DATA",
                                            "XYZZY", "XYZZY"])
        self.assertEqual(replies[-1].code, 421, replies)
        self.assertTrue(c.wait_closed(10))


class TimeoutTest(ProtocolTestCase):
    config = {"timeouts": {"command": 2, "data": 2}}

    def test_idle_timeout(self):
        c = self.session()
        r = c.read_reply(timeout=20)
        self.assertEqual(r.first, f"421 4.4.2 {HOSTNAME} Timeout, closing connection")
        self.assertTrue(c.wait_closed(10))

    def test_timeout_before_ehlo(self):
        with self.server.client() as c:
            c.greeting()
            r = c.read_reply(timeout=20)
            self.assertEqual(r.first, f"421 4.4.2 {HOSTNAME} Timeout, closing connection")
            self.assertTrue(c.wait_closed(10))

    def test_timeout_partial_command(self):
        c = self.session()
        c.send(b"MAIL FROM:<a@exa")
        r = c.read_reply(timeout=20)
        self.assertEqual(r.first, f"421 4.4.2 {HOSTNAME} Timeout, closing connection")
        self.assertTrue(c.wait_closed(10))

    def test_timeout_in_data_not_stored(self):
        c = self.session()
        self.cmd(c, "MAIL FROM:<a@example.test>", 250)
        self.cmd(c, "RCPT TO:<b@example.test>", 250)
        self.cmd(c, "DATA", 354)
        c.send(b"Subject: never finished\r\n\r\npartial")
        r = c.read_reply(timeout=20)
        self.assertReply(r, 421, "4.4.2")
        self.assertTrue(c.wait_closed(10))
        self.server.assert_nothing_stored(self)

    def test_activity_resets_timer(self):
        c = self.session()
        for _ in range(6):
            time.sleep(0.5)
            self.cmd(c, "NOOP", 250)


class ConnectionLimitTest(ProtocolTestCase):
    LIMIT = 4
    config = {"limits": {"max_connections": LIMIT}}

    def open_sessions(self):
        clients = [self.server.client() for _ in range(self.LIMIT)]
        return clients, [c.read_reply() for c in clients]

    def test_max_connections(self):
        # The harness' readiness probe may still be counted for a moment, so retry.
        deadline = time.monotonic() + 20
        while True:
            clients, greetings = self.open_sessions()
            if all(r.code == 220 for r in greetings):
                break
            for c in clients:
                c.close()
            self.assertLess(time.monotonic(), deadline, f"never got {self.LIMIT} sessions: {greetings}")
            time.sleep(0.2)
        try:
            self.assertTrue(all(r.code == 220 for r in greetings), greetings)
            with self.server.client() as extra:
                r = extra.read_reply()
                self.assertEqual(r.code, 421, r)
                self.assertTrue(r.lines[0].startswith("4.7.0"), r)
                self.assertIn("Too many connections", r.lines[0])
                self.assertTrue(extra.wait_closed(10))
            # The admitted sessions are unaffected.
            for c in clients:
                self.assertEqual(c.command("NOOP").code, 250)
        finally:
            for c in clients:
                c.close()
        # Once they are gone, new sessions are admitted again.
        deadline = time.monotonic() + 20
        while True:
            with self.server.client() as c:
                if c.read_reply().code == 220:
                    break
            self.assertLess(time.monotonic(), deadline, "never admitted again")
            time.sleep(0.2)


class Ipv6Test(ProtocolTestCase):
    def setUp(self):
        if not h.ipv6_loopback_available():
            self.skipTest("no IPv6 loopback")
        self.server = h.start_server(self, {"listener": [{"host": "::1"}]})

    def test_ipv6_delivery(self):
        c = self.session()
        queue_id(c.send_message("a@example.test", ["b@example.test"], h.make_message()))
        self.assertEqual(h.parse_received(self.one_message()).group("ip"), "::1")


class SessionLogTest(ProtocolTestCase):
    def test_session_end_logged(self):
        offset = len(self.server.log_text())
        c = self.session(ehlo="logger.example.test")
        queue_id(c.send_message("a@example.test", ["b@example.test"], h.make_message()))
        c.command("QUIT")
        c.wait_closed(10)
        m = self.server.wait_for_log(r"^.*session end:.*logger\.example\.test.*$", start=offset)
        line = m.group(0)
        self.assertIn("127.0.0.1", line)
        self.assertIn("cleartext", line)


if __name__ == "__main__":
    unittest.main()
