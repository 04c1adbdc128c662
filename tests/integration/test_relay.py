"""Outbound relaying end to end, black box: a sending mxgate (A) takes mail
over SMTP and delivers it to the MX hosts of zones served by a real nsd with
DNSSEC-signed zones (dnsbed.py), on the port P chosen at run time.  Every MX
host has its own loopback address (127.0.0.2, 127.0.0.3, ...), all on port P;
the receivers there are mxgate instances (B), a real Postfix, scripted SMTP
servers and a STARTTLS-stripping man in the middle.

For each case the test checks the receivers' Maildirs, the sender's spool
(`mxgate queue list --json`) and the sender's log line per attempt:

  delivery: <id>: to=<domain> relay=<host>[<addr>]:<port> tls=<level> <tls summary>
            [rcpt=<address>] status=sent|deferred|bounced (<reason>)

A retries after 1 s, then every 2 s ([queue] retry_initial = 1, retry_max =
2), so retries happen within seconds; every wait is bounded, and every process
and thread a test starts is stopped in its cleanup, also on failure.

Address plan (port P everywhere):
  127.0.0.2   mx.dane-ok.test      mxgate, tls may; signed zone, right TLSA
  127.0.0.3   mx.dane-bad.test     mxgate; signed zone, wrong TLSA
  127.0.0.4   Postfix              mx.postfix-may.test (unsigned), mx.postfix-dane.test (signed, TLSA)
  127.0.0.5   mx.insecure.test     mxgate; unsigned zone
  127.0.0.6   mx.bogus.test        mxgate; signed zone whose MX RRset was altered after signing;
              also where mx.bogus-a.test's A record was altered to point (from 127.0.0.66)
  127.0.0.7   mx.notls.test        mxgate, tls none (no STARTTLS); MX of notls.test and notls-enc.test
  127.0.0.8   mx.mitm.test         STARTTLS stripper -> 127.0.0.17 (mxgate, right TLSA)
  127.0.0.9   (client source address for the open-relay case)
  127.0.0.10  mx1.backup.test      nothing listens (MX 10)
  127.0.0.11  mx2.backup.test      mxgate (MX 20); signed zone, TLSA for both
  127.0.0.12  mx.retry.test        scripted server: RCPT 451 until the test says otherwise
  127.0.0.13  mx.reject.test       scripted server: RCPT 550 5.1.1
  127.0.0.14  mx.restart.test      mxgate, started while A is down
  127.0.0.15  mx.queue.test        mxgate, started before "queue flush"
  nullmx.test: MX 0 . (RFC 7505)
"""

from __future__ import annotations

import email
import email.message
import email.utils
import hashlib
import shutil
import tempfile
import time
import unittest
from pathlib import Path

import dnsbed
import mxgate_harness as h
import relay_helpers as rh

SENDER_DOMAIN = "sender.test"  # A's own domain: a maildir route, so bounces land in A's Maildir
DANE_EE = r"^verified TLS \(DANE-EE\) TLSv1\.3 TLS_\S+$"
ANONYMOUS = r"^anonymous TLS TLSv1\.3 TLS_\S+$"
SENT = r"^250 2\.0\.0 Ok: queued as \S+$"
WAIT = 20.0


def mid(domain: str = "sender.test") -> str:
    return email.utils.make_msgid(domain=domain)


def message(rcpt: str, message_id: str, sender: str = f"alice@{SENDER_DOMAIN}", subject: str = "relay") -> bytes:
    return h.make_message(subject=subject, body="Relayed body.\r\n", message_id=message_id,
                          sender=sender, rcpt=rcpt)


def message_id_of(delivered: h.Delivered) -> str | None:
    return email.message_from_bytes(delivered.content).get("Message-ID")


def make_ecdsa_cert(directory: Path, name: str, cn: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    proc = h.run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-newkey", "ec",
                  "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", str(key), "-out", str(cert),
                  "-subj", f"/CN={cn}"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    return cert, key


class RelayTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        missing = [t for t in ("nsd", "ldns-keygen", "ldns-signzone", "openssl") if not shutil.which(t)]
        if missing:
            raise unittest.SkipTest(f"{', '.join(missing)} missing (scripts/setup installs them)")
        cls.tmp = Path(tempfile.mkdtemp(prefix="mxgate-relay-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.port = rh.port_free_everywhere()
        certs = h.certs_dir()
        # Receivers have an ECDSA and an RSA certificate and OpenSSL picks one:
        # a DANE-EE record for each, so the match never depends on that choice.
        cls.mxgate_digests = [dnsbed.spki_sha256(certs / "ecdsa.pem"), dnsbed.spki_sha256(certs / "rsa.pem")]
        # Postfix gets a certificate of its own, so its TLSA record can only
        # match what Postfix itself presents.
        cls.postfix_certs = cls.tmp / "postfix-certs"
        cls.postfix_certs.mkdir()
        cert, _ = make_ecdsa_cert(cls.postfix_certs, "ecdsa", "postfix.test")
        cls.postfix_digest = dnsbed.spki_sha256(cert)
        wrong = hashlib.sha256(b"not the certificate").hexdigest()
        p = cls.port

        def tlsa(host: str, digests: list[str]) -> list[str]:
            return [f"_{p}._tcp.{host} TLSA 3 1 1 {d}" for d in digests]

        zones = {
            "dane-ok.test": {"records": ["@ MX 10 mx", "mx A 127.0.0.2", *tlsa("mx", cls.mxgate_digests)]},
            "dane-bad.test": {"records": ["@ MX 10 mx", "mx A 127.0.0.3", *tlsa("mx", [wrong])]},
            "insecure.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.5"]},
            "bogus.test": {
                "records": ["@ MX 10 mx", "mx A 127.0.0.6", *tlsa("mx", cls.mxgate_digests)],
                # The MX RRset no longer matches its signature; the address
                # record stays valid, and a receiver listens there.
                "tamper": ("IN MX 10 mx.bogus.test.", "IN MX 20 mx.bogus.test."),
            },
            "bogus-a.test": {
                # The MX RRset is valid; the host's address record was
                # changed after signing to point at the listening receiver.
                "records": ["@ MX 10 mx", "mx A 127.0.0.66", *tlsa("mx", cls.mxgate_digests)],
                "tamper": ("IN A 127.0.0.66", "IN A 127.0.0.6"),
            },
            "notls.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.7"]},
            "notls-enc.test": {"signed": False, "records": ["@ MX 10 mx.notls.test."]},
            "mitm.test": {"records": ["@ MX 10 mx", "mx A 127.0.0.8", *tlsa("mx", cls.mxgate_digests)]},
            "backup.test": {"records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.10", "mx2 A 127.0.0.11",
                                        *tlsa("mx1", cls.mxgate_digests), *tlsa("mx2", cls.mxgate_digests)]},
            "retry.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.12"]},
            "reject.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.13"]},
            "nullmx.test": {"records": ["@ MX 0 ."]},
            "restart.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.14"]},
            "queue.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.15"]},
            "postfix-may.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.4"]},
            "postfix-dane.test": {"records": ["@ MX 10 mx", "mx A 127.0.0.4",
                                              *tlsa("mx", [cls.postfix_digest])]},
        }
        cls.bed = dnsbed.DnsBed(cls.tmp / "bed", zones=zones)
        cls.addClassCleanup(cls.bed.close)
        cls.bed.start()

    # ------------------------------------------------------------------ peers

    def start_sender(self, tls: str = "dane", routes: list[dict] | None = None,
                     retry: tuple[int, int] = (1, 2), **overrides) -> rh.LoopbackMxgate:
        """A: SMTP on 127.0.0.1; mail for sender.test to its own Maildir,
        everything else to the MX hosts on port P with TLS level TLS."""
        config = {
            "listener": [{"host": "127.0.0.1", "tls": "may"}],
            "delivery": {"maildir": "mail", "mx_port": self.port, "tls": tls},
            "queue": {"retry_initial": retry[0], "retry_max": retry[1]},
            "accept_domains": [SENDER_DOMAIN],
            "route": [{"domain": SENDER_DOMAIN, "next_hop": "maildir"}, *(routes or []),
                      {"domain": "*", "next_hop": "mx"}],
        }
        config.update(overrides)
        server = rh.LoopbackMxgate(config, extra_toml=self.bed.toml())
        self.addCleanup(server.close)
        server.start()
        return server

    def start_receiver(self, address: str, hostname: str, tls: str = "may",
                       start: bool = True) -> rh.LoopbackMxgate:
        """B: an mxgate on address:P delivering everything to its Maildir."""
        server = rh.LoopbackMxgate({"hostname": hostname,
                                    "listener": [{"host": address, "port": self.port, "tls": tls}]})
        self.addCleanup(server.close)
        if start:
            server.start()
        return server

    def scripted_server(self, address: str, rcpt_reply) -> rh.ScriptedSmtpServer:
        server = rh.ScriptedSmtpServer(address, self.port, rcpt_reply)
        self.addCleanup(server.close)
        return server

    # ------------------------------------------------------------------ assertions

    def assertAttempt(self, line, host: str, address: str, level: str, status: str,
                      reason: str, summary: str | None = None, rcpt: str | None = None):
        """One delivery log line: relay, level, status, reason (regex), TLS summary (regex)."""
        text = line.group(0)
        self.assertEqual(line["relay"], f"{host}[{address}]:{self.port}", text)
        self.assertEqual(line["level"], level, text)
        self.assertEqual(line["status"], status, text)
        self.assertRegex(line["reason"], reason, text)
        if summary is not None:
            self.assertRegex(line["summary"] or "", summary, text)
        if rcpt is not None:
            self.assertEqual(line["rcpt"], rcpt, text)

    def assertDeliveredOnce(self, receiver: rh.LoopbackMxgate, message_id: str, content: bytes,
                            rcpt: str, tls: bool) -> h.Delivered:
        """Exactly one file in RECEIVER's Maildir: this message, for this
        recipient, with the receiver's Received header saying how it came."""
        [delivered] = receiver.wait_for_messages(1)
        time.sleep(0.3)  # a duplicate would show up now
        self.assertEqual(len(receiver.maildir_files()), 1, receiver.maildir_files())
        self.assertEqual(message_id_of(delivered), message_id)
        self.assertEqual(delivered.delivered_to, [rcpt])
        self.assertEqual(delivered.return_path, f"<alice@{SENDER_DOMAIN}>")
        self.assertTrue(delivered.content.endswith(h.lf(content)), delivered.raw[:600])
        received = h.parse_received(delivered)
        self.assertEqual(received["helo"], h.HOSTNAME)  # A's EHLO name
        self.assertEqual(received["ip"], "127.0.0.1")
        self.assertEqual(received["proto"], "ESMTPS" if tls else "ESMTP", delivered.received)
        if tls:
            self.assertEqual(received["tlsver"], "TLSv1.3", delivered.received)
        return delivered

    def assertQueued(self, sender: rh.LoopbackMxgate, qid: str, rcpt: str, reply: str,
                     min_attempts: int = 1) -> dict:
        """QID is in the spool with RCPT pending, its last reply matching REPLY.
        Waits (bounded) for MIN_ATTEMPTS: the state is saved just after the log line."""
        deadline = time.monotonic() + WAIT
        while True:
            entries = {e["id"]: e for e in sender.queue_list()}
            if entries.get(qid, {}).get("attempts", 0) >= min_attempts or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertIn(qid, entries, entries)
        entry = entries[qid]
        self.assertEqual(entry["sender"], f"alice@{SENDER_DOMAIN}")
        self.assertGreaterEqual(entry["attempts"], min_attempts, entry)
        [recipient] = entry["recipients"]
        self.assertEqual(recipient["address"], rcpt)
        self.assertEqual(recipient["status"], "pending", entry)
        self.assertRegex(recipient["last_reply"], reply, entry)
        self.assertEqual(entry["last_error"], recipient["last_reply"], entry)
        return entry

    def assertNothingDelivered(self, receiver: rh.LoopbackMxgate):
        self.assertEqual(receiver.maildir_files(), [], "the receiver got the message")
        self.assertEqual(receiver.spool_files(), [], "the receiver spooled the message")

    def parse_dsn(self, delivered: h.Delivered) -> tuple[email.message.Message, list[email.message.Message]]:
        """The bounce in A's Maildir as (message, delivery-status field groups)."""
        self.assertEqual(delivered.return_path, "<>")  # RFC 5321 4.5.5: null reverse-path
        self.assertEqual(delivered.delivered_to, [f"alice@{SENDER_DOMAIN}"])
        dsn = email.message_from_bytes(delivered.raw)
        self.assertEqual(dsn.get_content_type(), "multipart/report", delivered.raw[:800])
        self.assertEqual(dsn.get_param("report-type"), "delivery-status")
        self.assertEqual(dsn["To"], f"<alice@{SENDER_DOMAIN}>")
        self.assertTrue(dsn["From"].startswith(f"MAILER-DAEMON@{h.HOSTNAME}"), dsn["From"])
        self.assertEqual(dsn["Auto-Submitted"], "auto-replied")
        parts = dsn.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        groups = parts[1].get_payload()
        self.assertGreaterEqual(len(groups), 2, groups)
        self.assertEqual(groups[0]["Reporting-MTA"], f"dns; {h.HOSTNAME}")
        return dsn, groups

    # ------------------------------------------------------------------ 1-4: DANE

    def test_01_correct_tlsa_delivers_with_dane_ee(self):
        receiver = self.start_receiver("127.0.0.2", "mx.dane-ok.test")
        sender = self.start_sender(tls="dane")
        message_id, rcpt = mid(), "user@dane-ok.test"
        content = message(rcpt, message_id)
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], content)
        self.assertDeliveredOnce(receiver, message_id, content, rcpt, tls=True)
        [line] = sender.wait_deliveries(qid, 1)
        self.assertEqual(line["to"], "dane-ok.test")
        self.assertAttempt(line, "mx.dane-ok.test", "127.0.0.2", "dane", "sent", SENT, DANE_EE, rcpt)
        sender.wait_spool_empty()
        self.assertEqual(sender.queue_list(), [])
        self.assertEqual(len(sender.deliveries(qid)), 1, "one attempt only")

    def test_02_wrong_tlsa_defers_and_never_falls_back_to_cleartext(self):
        receiver = self.start_receiver("127.0.0.3", "mx.dane-bad.test")
        sender = self.start_sender(tls="dane")
        rcpt = "user@dane-bad.test"
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], message(rcpt, mid()))
        lines = sender.wait_deliveries(qid, 3)  # the first attempt and two retries
        for line in lines:
            self.assertAttempt(line, "mx.dane-bad.test", "127.0.0.3", "dane", "deferred", r"^TLSA mismatch$")
            self.assertNotIn("verified", line["summary"] or "")
        self.assertNothingDelivered(receiver)
        self.assertQueued(sender, qid, rcpt, r"^451 4\.4\.1 TLSA mismatch", min_attempts=3)
        # The receiver saw handshakes, never a transaction.
        self.assertNotIn("MAIL FROM", receiver.log_text())
        self.assertEqual(sender.maildir_files(), [], "no bounce for a temporary failure")

    def test_03_bogus_zone_defers_and_delivers_nothing(self):
        receiver = self.start_receiver("127.0.0.6", "mx.bogus.test")
        sender = self.start_sender(tls="dane")
        rcpt, rcpt_a = "user@bogus.test", "user@bogus-a.test"
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], message(rcpt, mid()))
        qid_a = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt_a], message(rcpt_a, mid()))
        for line in sender.wait_deliveries(qid, 2):  # bogus MX RRset
            self.assertEqual(line["to"], "bogus.test", line.group(0))
            self.assertIsNone(line["relay"], "no server may be contacted: " + line.group(0))
            self.assertEqual(line["level"], "dane")
            self.assertEqual(line["status"], "deferred")
            self.assertRegex(line["reason"], r"^4\.4\.3 MX lookup for bogus\.test: bogus DNSSEC")
        for line in sender.wait_deliveries(qid_a, 2):  # bogus address record of the MX host
            self.assertEqual(line["to"], "bogus-a.test", line.group(0))
            self.assertEqual(line["relay"], "mx.bogus-a.test", "no address may be used: " + line.group(0))
            self.assertEqual(line["level"], "dane")
            self.assertEqual(line["status"], "deferred")
            self.assertRegex(line["reason"], r"^address lookup for mx\.bogus-a\.test: bogus DNSSEC")
        self.assertNothingDelivered(receiver)
        self.assertQueued(sender, qid, rcpt, r"^451 4\.4\.3 MX lookup for bogus\.test: bogus DNSSEC",
                          min_attempts=2)
        self.assertQueued(sender, qid_a, rcpt_a,
                          r"^451 4\.4\.1 address lookup for mx\.bogus-a\.test: bogus DNSSEC", min_attempts=2)

    def test_04_insecure_zone_under_dane_uses_opportunistic_tls(self):
        receiver = self.start_receiver("127.0.0.5", "mx.insecure.test")
        sender = self.start_sender(tls="dane")
        message_id, rcpt = mid(), "user@insecure.test"
        content = message(rcpt, message_id)
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], content)
        self.assertDeliveredOnce(receiver, message_id, content, rcpt, tls=True)
        [line] = sender.wait_deliveries(qid, 1)
        self.assertAttempt(line, "mx.insecure.test", "127.0.0.5", "dane", "sent", SENT, ANONYMOUS, rcpt)
        sender.wait_spool_empty()

    # ------------------------------------------------------------------ 5-6: no STARTTLS

    def test_05_receiver_without_starttls(self):
        receiver = self.start_receiver("127.0.0.7", "mx.notls.test", tls="none")
        # notls.test under "may", notls-enc.test (same MX host) under "encrypt".
        sender = self.start_sender(tls="may", routes=[{"domain": "notls-enc.test", "next_hop": "mx",
                                                       "tls": "encrypt"}])
        may_id, may_rcpt = mid(), "user@notls.test"
        may_content = message(may_rcpt, may_id)
        may_qid = sender.submit(f"alice@{SENDER_DOMAIN}", [may_rcpt], may_content)
        enc_rcpt = "user@notls-enc.test"
        enc_qid = sender.submit(f"alice@{SENDER_DOMAIN}", [enc_rcpt], message(enc_rcpt, mid()))

        self.assertDeliveredOnce(receiver, may_id, may_content, may_rcpt, tls=False)
        [line] = sender.wait_deliveries(may_qid, 1)
        self.assertAttempt(line, "mx.notls.test", "127.0.0.7", "may", "sent", SENT, r"^cleartext$", may_rcpt)

        for line in sender.wait_deliveries(enc_qid, 2):
            self.assertEqual(line["to"], "notls-enc.test")
            self.assertAttempt(line, "mx.notls.test", "127.0.0.7", "encrypt", "deferred",
                               r"^STARTTLS not offered$")
        self.assertEqual(len(receiver.maildir_files()), 1, "the encrypt message was delivered")
        self.assertQueued(sender, enc_qid, enc_rcpt, r"STARTTLS not offered", min_attempts=2)

    def test_06_starttls_stripped_by_man_in_the_middle_defers(self):
        receiver = self.start_receiver("127.0.0.17", "mx.mitm.test")
        proxy = rh.StartTlsStripper("127.0.0.8", self.port, ("127.0.0.17", self.port))
        self.addCleanup(proxy.close)
        sender = self.start_sender(tls="dane")
        rcpt = "user@mitm.test"
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], message(rcpt, mid()))
        for line in sender.wait_deliveries(qid, 2):
            self.assertAttempt(line, "mx.mitm.test", "127.0.0.8", "dane", "deferred", r"^STARTTLS not offered$")
        self.assertGreaterEqual(proxy.stripped, 2, "the proxy did not see the EHLO replies")
        with proxy.lock:
            sent = proxy.client_data
        self.assertIn(b"EHLO ", sent)
        self.assertNotIn(b"MAIL FROM", sent.upper(), "the transaction went out in cleartext")
        self.assertNotIn(b"RCPT TO", sent.upper())
        self.assertNothingDelivered(receiver)
        self.assertQueued(sender, qid, rcpt, r"STARTTLS not offered", min_attempts=2)

    # ------------------------------------------------------------------ 7-10: MX, retries, bounces

    def test_07_first_mx_refuses_second_mx_delivers(self):
        receiver = self.start_receiver("127.0.0.11", "mx2.backup.test")
        sender = self.start_sender(tls="dane")
        message_id, rcpt = mid(), "user@backup.test"
        content = message(rcpt, message_id)
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], content)
        self.assertDeliveredOnce(receiver, message_id, content, rcpt, tls=True)
        sender.wait_deliveries(qid, 1, predicate=lambda m: m["status"] == "sent")
        sender.wait_spool_empty()
        first, second = sender.deliveries(qid)
        self.assertAttempt(first, "mx1.backup.test", "127.0.0.10", "dane", "deferred",
                           rf"^connect to 127\.0\.0\.10:{self.port} failed: Connection refused$")
        self.assertAttempt(second, "mx2.backup.test", "127.0.0.11", "dane", "sent", SENT, DANE_EE, rcpt)

    def test_08_4xx_is_retried_until_accepted(self):
        state = {"accept": False}
        scripted = self.scripted_server(
            "127.0.0.12",
            lambda rcpt, n: "250 2.1.5 Ok" if state["accept"] else f"451 4.7.1 <{rcpt}>: try again later")
        sender = self.start_sender(tls="dane")
        message_id, rcpt = mid(), "user@retry.test"
        content = message(rcpt, message_id)
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], content)

        sender.wait_deliveries(qid, 1)
        attempts_seen = []
        deadline = time.monotonic() + WAIT
        while len(set(attempts_seen)) < 2 or max(attempts_seen) < 2:
            entries = [e for e in sender.queue_list() if e["id"] == qid]
            if entries and entries[0]["attempts"] > 0:
                attempts_seen.append(entries[0]["attempts"])
            self.assertLess(time.monotonic(), deadline, f"attempts never grew: {attempts_seen}")
            time.sleep(0.05)
        self.assertEqual(attempts_seen, sorted(attempts_seen), "attempts went down")
        self.assertQueued(sender, qid, rcpt, r"^451 4\.7\.1 <user@retry\.test>: try again later$", min_attempts=2)
        self.assertEqual(scripted.transactions, [])

        state["accept"] = True
        sender.wait_deliveries(qid, 1, predicate=lambda m: m["status"] == "sent")
        sender.wait_spool_empty()
        lines = sender.deliveries(qid)
        *deferred, sent = lines
        self.assertGreaterEqual(len(deferred), 2)
        for line in deferred:
            self.assertAttempt(line, "mx.retry.test", "127.0.0.12", "dane", "deferred",
                               r"^451 4\.7\.1 <user@retry\.test>: try again later$", r"^cleartext$", rcpt)
        self.assertAttempt(sent, "mx.retry.test", "127.0.0.12", "dane", "sent",
                           r"^250 2\.0\.0 Ok: queued as FAKE1$", r"^cleartext$", rcpt)
        self.assertEqual(scripted.rcpt_counts[rcpt], len(lines))
        [txn] = scripted.transactions
        self.assertEqual(txn["sender"], f"alice@{SENDER_DOMAIN}")
        self.assertEqual(txn["recipients"], [rcpt])
        self.assertEqual(email.message_from_bytes(txn["data"])["Message-ID"], message_id)
        self.assertEqual(sender.maildir_files(), [], "no bounce")

    def test_09_5xx_bounces_with_a_dsn_but_never_to_the_null_sender(self):
        scripted = self.scripted_server("127.0.0.13", lambda rcpt, n: f"550 5.1.1 <{rcpt}>: Recipient address rejected: "
                                                              "User unknown")
        sender = self.start_sender(tls="dane")
        message_id, rcpt = mid(), "nobody@reject.test"
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], message(rcpt, message_id, subject="to bounce"))
        [bounce] = sender.wait_for_messages(1)

        [line] = sender.wait_deliveries(qid, 1)
        self.assertAttempt(line, "mx.reject.test", "127.0.0.13", "dane", "bounced",
                           r"^550 5\.1\.1 <nobody@reject\.test>: Recipient address rejected: User unknown$",
                           r"^cleartext$", rcpt)
        dsn, groups = self.parse_dsn(bounce)
        [per_rcpt] = groups[1:]
        self.assertEqual(per_rcpt["Final-Recipient"], f"rfc822; {rcpt}")
        self.assertEqual(per_rcpt["Action"], "failed")
        self.assertEqual(per_rcpt["Status"], "5.1.1")
        self.assertEqual(per_rcpt["Remote-MTA"], "dns; mx.reject.test")
        self.assertRegex(per_rcpt["Diagnostic-Code"], r"^smtp; 550 5\.1\.1 <nobody@reject\.test>")
        returned = dsn.get_payload()[2].get_payload()
        self.assertIn(f"Message-ID: {message_id}", returned)
        self.assertIn("Subject: to bounce", returned)
        self.assertEqual(scripted.transactions, [], "DATA after a refused RCPT")

        # The same refusal for a message from the null sender: no bounce.
        with sender.session() as c:
            null_qid = h.queue_id(c.send_message("", ["nobody2@reject.test"], message("nobody2@reject.test", mid())))
        sender.wait_for_log(rf"delivery: {null_qid}: failed recipients of a null-sender message: no bounce$")
        [null_line] = sender.deliveries(null_qid)
        self.assertEqual(null_line["status"], "bounced")
        sender.wait_spool_empty()
        self.assertEqual(len(sender.maildir_files()), 1, "a bounce for the null sender")
        self.assertNotRegex(sender.log_text(), rf"delivery: {null_qid}: sender non-delivery notification")

    def test_10_null_mx_bounces_at_once(self):
        sender = self.start_sender(tls="dane")
        rcpt = "user@nullmx.test"
        qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], message(rcpt, mid()))
        [bounce] = sender.wait_for_messages(1, timeout=10)
        [line] = sender.deliveries(qid)
        self.assertEqual(line["to"], "nullmx.test")
        self.assertIsNone(line["relay"])
        self.assertEqual(line["status"], "bounced")
        self.assertRegex(line["reason"], r"^5\.1\.10 .*null MX")
        _, groups = self.parse_dsn(bounce)
        [per_rcpt] = groups[1:]
        self.assertEqual(per_rcpt["Final-Recipient"], f"rfc822; {rcpt}")
        self.assertEqual(per_rcpt["Action"], "failed")
        self.assertEqual(per_rcpt["Status"], "5.1.10")
        self.assertIsNone(per_rcpt["Remote-MTA"])
        sender.wait_spool_empty()

    # ------------------------------------------------------------------ 11: restart

    def test_11_restart_in_the_middle_of_a_queue_loses_nothing(self):
        sender = self.start_sender(tls="dane")
        ids = {}
        for i in range(5):
            rcpt = f"user{i}@restart.test"
            message_id = mid()
            ids[sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], message(rcpt, message_id))] = message_id
        for qid in ids:
            [line, *_] = sender.wait_deliveries(qid, 1)
            self.assertAttempt(line, "mx.restart.test", "127.0.0.14", "dane", "deferred",
                               r"^connect to 127\.0\.0\.14:\d+ failed: Connection refused$")
        self.assertEqual(sender.stop(), 0, "SIGTERM is a clean stop")
        queued = sender.queue_list()  # A is down: the spool itself
        self.assertEqual(sorted(e["id"] for e in queued), sorted(ids))
        self.assertTrue(all(e["recipients"][0]["status"] == "pending" for e in queued), queued)

        receiver = self.start_receiver("127.0.0.14", "mx.restart.test")
        log_offset = len(sender.log_text())
        sender.start()
        delivered = receiver.wait_for_messages(5)
        sender.wait_spool_empty()
        time.sleep(0.5)  # a duplicate would show up now
        got = sorted(message_id_of(d) for d in receiver.messages())
        self.assertEqual(got, sorted(ids.values()), "each message exactly once")
        self.assertEqual(len(delivered), 5)
        for qid in ids:
            sent = [m for m in sender.deliveries(qid) if m.start() >= log_offset and m["status"] == "sent"]
            self.assertEqual(len(sent), 1, qid)
        self.assertEqual(sender.queue_list(), [])

    # ------------------------------------------------------------------ 12: Postfix

    def test_12_delivery_to_postfix_with_may_and_dane(self):
        why = rh.postfix_available()
        if why:
            self.skipTest(why)
        postfix = rh.PostfixServer("127.0.0.4", self.port, ["postfix-may.test", "postfix-dane.test"],
                                   self.postfix_certs)
        self.addCleanup(postfix.close)
        postfix.start()
        sender = self.start_sender(tls="may", routes=[{"domain": "postfix-dane.test", "next_hop": "mx",
                                                       "tls": "dane"}])
        cases = [("user@postfix-may.test", "may", ANONYMOUS), ("user@postfix-dane.test", "dane", DANE_EE)]
        for rcpt, level, summary in cases:
            message_id = mid()
            qid = sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], message(rcpt, message_id))
            got = postfix.wait_for_message(message_id)
            self.assertEqual(got["Delivered-To"], rcpt)
            self.assertEqual(got["Return-Path"], f"<alice@{SENDER_DOMAIN}>")
            received = " ".join(got.get_all("Received")[0].split())
            self.assertRegex(received, r"^from mx\.example\.test \(.*\[127\.0\.0\.1\]\) \(using TLSv1\.3 ")
            self.assertRegex(received, r" by postfix\.test \(Postfix\) with ESMTPS id ")
            [line] = sender.wait_deliveries(qid, 1)
            domain = rcpt.split("@")[1]
            self.assertAttempt(line, f"mx.{domain}", "127.0.0.4", level, "sent",
                               r"^250 2\.0\.0 Ok: queued as [0-9A-F]+$", summary, rcpt)
        sender.wait_spool_empty()
        self.assertEqual(len(postfix.maildir_files()), 2)

    # ------------------------------------------------------------------ 13: open relay

    def test_13_never_an_open_relay(self):
        sender = self.start_sender(relay_networks=["127.0.0.1/32"], accept_domains=["local.test"],
                                   route=[{"domain": "local.test", "next_hop": "maildir"},
                                          {"domain": "*", "next_hop": "mx"}])
        outsider = sender.session(source="127.0.0.9")
        with outsider:
            self.assertEqual(outsider.command("MAIL FROM:<x@outside.test>").code, 250)
            r = outsider.command("RCPT TO:<x@elsewhere.test>")
            self.assertEqual(r.first, "554 5.7.1 <x@elsewhere.test>: Relay access denied")
            r = outsider.command("RCPT TO:<x@dane-ok.test>")  # a domain A could deliver to
            self.assertEqual(r.first, "554 5.7.1 <x@dane-ok.test>: Relay access denied")
            r = outsider.command("RCPT TO:<x@local.test>")
            self.assertEqual(r.code, 250, r)
            r = outsider.command("RCPT TO:<y@LOCAL.Test>")
            self.assertEqual(r.code, 250, r)
            self.assertEqual(outsider.command("DATA").code, 354)
            outsider.send(h.dot_stuff(message("x@local.test", mid(), sender="x@outside.test")) + b".\r\n")
            qid = h.queue_id(outsider.read_reply())
            outsider.command("QUIT")
        [local] = sender.wait_for_messages(1)
        self.assertEqual(local.delivered_to, ["x@local.test", "y@LOCAL.Test"])
        sender.wait_spool_empty()
        self.assertEqual([m["to"] for m in sender.deliveries(qid)], [])  # no network attempt at all

        with sender.session(source="127.0.0.1") as insider:
            self.assertEqual(insider.command("MAIL FROM:<x@inside.test>").code, 250)
            r = insider.command("RCPT TO:<x@elsewhere.test>")
            self.assertEqual(r.code, 250, r)
            self.assertEqual(insider.command("RSET").code, 250)
            insider.command("QUIT")

    # ------------------------------------------------------------------ 14: queue admin

    def test_14_queue_list_flush_and_delete(self):
        # Long retry intervals: only the flush can bring the next attempt.
        sender = self.start_sender(tls="dane", retry=(60, 120))
        keep_id, drop_id = mid(), mid()
        keep_qid = sender.submit(f"alice@{SENDER_DOMAIN}", ["keep@queue.test"], message("keep@queue.test", keep_id))
        drop_qid = sender.submit(f"alice@{SENDER_DOMAIN}", ["drop@queue.test"], message("drop@queue.test", drop_id))
        for qid in (keep_qid, drop_qid):
            [line] = sender.wait_deliveries(qid, 1)
            self.assertAttempt(line, "mx.queue.test", "127.0.0.15", "dane", "deferred",
                               r"^connect to 127\.0\.0\.15:\d+ failed: Connection refused$")

        self.assertEqual([e["id"] for e in sender.queue_list()], sorted([keep_qid, drop_qid]))
        now = time.time()
        for qid, rcpt in ((keep_qid, "keep@queue.test"), (drop_qid, "drop@queue.test")):
            entry = self.assertQueued(sender, qid, rcpt, r"^451 4\.4\.1 connect to 127\.0\.0\.15:\d+ failed")
            self.assertEqual(entry["attempts"], 1)
            self.assertGreater(entry["size"], 0)
            self.assertGreaterEqual(entry["next_attempt_unix"], int(now) + 50, entry)
            self.assertLessEqual(entry["first_attempt_unix"], now + 1)
        text = sender.queue_command("list")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn(keep_qid.encode(), text.stdout)
        self.assertIn(b"<keep@queue.test>", text.stdout)
        self.assertIn(b"last error: 451 4.4.1 connect to 127.0.0.15:", text.stdout)

        deleted = sender.queue_command("delete", drop_qid)
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        self.assertEqual(deleted.stdout.decode().strip(), f"deleted {drop_qid}")
        self.assertEqual([e["id"] for e in sender.queue_list()], [keep_qid])
        self.assertNotEqual(sender.queue_command("delete", drop_qid).returncode, 0, "deleted twice")

        receiver = self.start_receiver("127.0.0.15", "mx.queue.test")
        started = time.monotonic()
        flushed = sender.queue_command("flush")
        self.assertEqual(flushed.returncode, 0, flushed.stderr)
        self.assertEqual(flushed.stdout.decode().strip(), "flush requested")
        [delivered] = receiver.wait_for_messages(1, timeout=15)
        self.assertLess(time.monotonic() - started, 15, "the flush did not retry at once")
        self.assertEqual(message_id_of(delivered), keep_id)
        sender.wait_spool_empty()
        self.assertEqual(sender.queue_list(), [])
        time.sleep(0.3)
        self.assertEqual(len(receiver.maildir_files()), 1, "the deleted message was delivered")
        self.assertEqual(len(sender.deliveries(drop_qid)), 1, "the deleted message was tried again")
        self.assertEqual(sender.maildir_files(), [], "a deletion is not a bounce")


    # ------------------------------------------------------------------ 15: large messages

    def test_15_large_messages_relay_intact_over_dane(self):
        # Large enough that the scheduler reads the content only when a
        # connection is ready (Spool::ContentRead::if_small), the relay client
        # gathers records into few sends and the receiver reads several
        # records at once; several at a time, so buffers are handed back and
        # reused across messages of different sizes.
        receiver = self.start_receiver("127.0.0.2", "mx.dane-ok.test")
        sender = self.start_sender(tls="dane")
        rcpt = "big@dane-ok.test"
        sent = {}
        for lines in (60000, 20000, 45000):
            body = "".join(f"{'.' if i % 5 == 0 else ''}{lines} line {i} {'y' * (i % 75)}\r\n" for i in range(lines))
            message_id = mid()
            content = h.make_message(subject="large", body=body, message_id=message_id,
                                     sender=f"alice@{SENDER_DOMAIN}", rcpt=rcpt)
            sent[message_id] = content
            sender.submit(f"alice@{SENDER_DOMAIN}", [rcpt], content)
        delivered = receiver.wait_for_messages(len(sent))
        self.assertEqual(len(delivered), len(sent))
        for d in delivered:
            content = sent[message_id_of(d)]
            self.assertTrue(d.content.endswith(h.lf(content)), f"{message_id_of(d)} changed on the way")
            self.assertEqual(h.parse_received(d)["proto"], "ESMTPS", d.received)
        sender.wait_spool_empty()

if __name__ == "__main__":
    unittest.main()
