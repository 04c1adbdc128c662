"""SPF, DKIM and DMARC through the running gateway, against real DNS.

nsd (dnsbed.py) serves the sender domains' SPF, DKIM key and DMARC records
on loopback; messages are DKIM-signed in the test with python3-dkim (the
oracle: an independent implementation) and sent over SMTP from 127.0.0.1,
which is not a relay client here (relay_networks = []), so mxgate checks
it like mail from the internet.  What is checked is what an operator sees:
the reply, the Authentication-Results field on delivered mail, the
quarantine, and the verdict in the log.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import unittest
from email.message import EmailMessage
from pathlib import Path

import dkim

import dnsbed
import relay_helpers as rh

SELECTOR = b"s2026"


def txt_strings(text: str) -> str:
    """A TXT value split into <=255-octet character-strings (RFC 1035 3.3.14)."""
    return " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))


def message(sender: str, subject: str, body: str = "Quarterly figures attached.\r\n") -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "carol@example.test"
    m["Subject"] = subject
    m["Message-ID"] = f"<{subject.replace(' ', '.')}@test>"
    m.set_content(body)
    return m.as_bytes(policy=m.policy.clone(linesep="\r\n"))


class SenderAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mxgate-auth-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        key = cls.tmp / "dkim.key"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True, timeout=60)
        cls.private_key = key.read_bytes()
        der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                             check=True, capture_output=True, timeout=60).stdout
        public = base64.b64encode(der).decode()
        zones = {
            # Signs its mail, sends it from 127.0.0.1, asks receivers to reject failures.
            "partner.test": {"records": [
                '@ TXT "v=spf1 ip4:127.0.0.1 -all"',
                f"{SELECTOR.decode()}._domainkey TXT {txt_strings('v=DKIM1; k=rsa; p=' + public)}",
                '_dmarc TXT "v=DMARC1; p=reject"']},
            # A bulk sender's bounce domain that authorises nobody.
            "esp.test": {"signed": False, "records": ['@ TXT "v=spf1 -all"']},
            "softfail.test": {"signed": False, "records": ['@ TXT "v=spf1 ip4:192.0.2.1 ~all"']},
            "neutral.test": {"signed": False, "records": ['@ TXT "v=spf1 ?all"']},
            # Fails with its own explanation (RFC 7208 section 6.2).
            "explained.test": {"signed": False, "records": ['@ TXT "v=spf1 -all exp=why.%{d}"',
                                                            'why TXT "%{i} is not a server of %{d}"']},
            # Our own domain: our servers are elsewhere, and DMARC says so.
            "example.test": {"signed": False, "records": ['@ TXT "v=spf1 ip4:192.0.2.1 -all"',
                                                          '_dmarc TXT "v=DMARC1; p=none"']},
            # Blocklists (RFC 5782): 127.0.0.1 is listed, and so is evil.test.
            "bl.test": {"signed": False, "records": ["1.0.0.127 A 127.0.0.2",
                                                     '1.0.0.127 TXT "listed for testing"']},
            "uribl.test": {"signed": False, "records": ["evil.test A 127.0.0.2",
                                                        "refused.test A 127.255.255.254"]},
        }
        cls.bed = dnsbed.DnsBed(cls.tmp / "bed", zones=zones)
        cls.addClassCleanup(cls.bed.close)
        cls.bed.start()

    def gateway(self, **filter_keys) -> rh.LoopbackMxgate:
        config = {
            "listener": [{"host": "127.0.0.1", "tls": "may"}],
            "accept_domains": ["example.test"],
            "relay_networks": [],
            "filter": {"protected_domains": ["example.test"], "protected_names": ["Alice Martin"],
                       **filter_keys},
        }
        server = rh.LoopbackMxgate(config, extra_toml=self.bed.toml())
        self.addCleanup(server.close)
        server.start()
        return server

    def sign(self, content: bytes) -> bytes:
        signature = dkim.sign(content, SELECTOR, b"partner.test", self.private_key,
                              include_headers=[b"From", b"To", b"Subject", b"Message-ID"])
        return signature + content

    def send(self, server, sender: str, content: bytes):
        with server.session() as c:
            return c.send_message(sender, ["carol@example.test"], content)

    def delivered_after(self, server, content_marker: bytes):
        for m in server.wait_for_messages(1):
            if content_marker in m.raw:
                return m
        self.fail(f"no delivered message contains {content_marker!r}")

    def results(self, delivered) -> str:
        raw = delivered.raw.decode("utf-8", "replace").replace("\r\n", "\n")
        start = raw.index("Authentication-Results: mx.example.test;")
        end = raw.index("\nX-mxgate-Verdict:", start)
        return " ".join(raw[start:end].split())

    def test_signed_mail_passes_spf_dkim_and_dmarc(self):
        server = self.gateway()
        content = self.sign(message("Bob <bob@partner.test>", "signed"))
        self.assertEqual(self.send(server, "bob@partner.test", content).code, 250)
        ar = self.results(self.delivered_after(server, b"Subject: signed"))
        self.assertIn("spf=pass", ar)
        self.assertIn("smtp.mailfrom=bob@partner.test", ar)
        self.assertRegex(ar, r"dkim=pass header\.d=partner\.test header\.s=s2026 header\.b=\S{8}")
        self.assertIn("dmarc=pass", ar)
        self.assertIn("header.from=partner.test", ar)

    def test_dkim_alone_aligns_for_a_bulk_sender_and_a_tampered_copy_is_refused(self):
        server = self.gateway()
        # Sent through a bulk sender whose bounce domain fails SPF: only the
        # aligned DKIM signature can pass DMARC.
        good = self.sign(message("Bob <bob@partner.test>", "newsletter"))
        self.assertEqual(self.send(server, "bounce@esp.test", good).code, 250)
        ar = self.results(self.delivered_after(server, b"Subject: newsletter"))
        self.assertIn("spf=fail", ar)
        self.assertIn("dkim=pass", ar)
        self.assertIn("dmarc=pass", ar)
        # One changed word in the body: DKIM fails, so DMARC fails, and
        # partner.test asked for rejection.
        tampered = good.replace(b"Quarterly figures", b"Quarterly invoice")
        reply = self.send(server, "bounce@esp.test", tampered)
        self.assertEqual(reply.code, 550, str(reply))
        self.assertEqual(reply.lines[-1], "5.7.1 Message refused as phishing")
        server.wait_for_log(r"action=reject .*rules=.*DMARC_POLICY_REJECT=1\.0")

    def test_spf_softfail_and_neutral_are_reported_and_delivered(self):
        server = self.gateway()
        self.assertEqual(self.send(server, "x@softfail.test", message("x@softfail.test", "soft")).code, 250)
        ar = self.results(self.delivered_after(server, b"Subject: soft"))
        self.assertIn("spf=softfail", ar)
        self.assertIn("dmarc=none", ar)
        server.wait_for_log(r"rules=(\S*,)?SPF_SOFTFAIL=0\.7")
        self.assertEqual(self.send(server, "y@neutral.test", message("y@neutral.test", "neutral")).code, 250)
        self.assertIn("spf=neutral", self.results(self.delivered_after(server, b"Subject: neutral")))

    def test_spf_starts_at_mail_and_is_done_before_data(self):
        server = self.gateway()
        with server.session() as c:
            self.assertEqual(c.command("MAIL FROM:<x@softfail.test>").code, 250)
            self.assertEqual(c.command("RCPT TO:<carol@example.test>").code, 250)
            # Before DATA: the check ran at the MAIL stage.
            server.wait_for_log(r"filter: mail: client=127\.0\.0\.1:\d+ from=<x@softfail\.test>: spf=softfail")
            self.assertEqual(c.command("DATA").code, 354)
            c.send(b"From: x@softfail.test\r\nSubject: staged 1\r\n\r\nbody\r\n.\r\n")
            self.assertEqual(c.read_reply().code, 250)
            # A second transaction on the same connection gets its own check.
            self.assertEqual(c.send_message("y@neutral.test", ["carol@example.test"],
                                            message("y@neutral.test", "staged 2")).code, 250)
        server.wait_for_messages(2)
        self.assertIn("spf=softfail", self.results(self.delivered_after(server, b"Subject: staged 1")))
        self.assertIn("spf=neutral", self.results(self.delivered_after(server, b"Subject: staged 2")))
        server.wait_for_log(r"filter: mail: client=127\.0\.0\.1:\d+ from=<y@neutral\.test>: spf=neutral")

    def test_mail_spoofing_our_own_domain_is_held(self):
        server = self.gateway()
        reply = self.send(server, "alice@example.test", message("Alice Martin <alice@example.test>", "wire"))
        self.assertEqual(reply.code, 250)
        out = rh.h.run([str(rh.h.BINARY), "quarantine", "list", "--json", "--config", str(server.config_path)],
                       text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("DMARC_FAIL_OWN_DOMAIN", out.stdout)
        self.assertEqual(server.maildir_files(), [])

    def test_forged_authentication_results_with_our_id_are_removed(self):
        server = self.gateway()
        forged = (b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=ceo@example.test\r\n"
                  b"Authentication-Results: other.test; dkim=pass\r\n")
        content = self.sign(message("Bob <bob@partner.test>", "forged"))
        self.assertEqual(self.send(server, "bob@partner.test", forged + content).code, 250)
        delivered = self.delivered_after(server, b"Subject: forged")
        self.assertNotIn(b"smtp.mailfrom=ceo@example.test", delivered.raw)
        self.assertIn(b"Authentication-Results: other.test; dkim=pass", delivered.raw)
        self.assertEqual(delivered.raw.count(b"Authentication-Results: mx.example.test;"), 1)

    def held(self, server) -> str:
        out = rh.h.run([str(rh.h.BINARY), "quarantine", "list", "--json", "--config", str(server.config_path)],
                       text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    def test_a_listed_client_is_spam(self):
        server = self.gateway(dnsbl=["bl.test"])
        content = self.sign(message("Bob <bob@partner.test>", "from a listed host"))
        self.assertEqual(self.send(server, "bob@partner.test", content).code, 250)
        self.assertIn("RCVD_IN_DNSBL", self.held(server))
        server.wait_for_log(r"action=quarantine .*rules=.*RCVD_IN_DNSBL=6\.0")
        self.assertEqual(server.maildir_files(), [])

    def test_the_client_is_looked_up_once_at_connect_for_every_message(self):
        server = self.gateway(dnsbl=["bl.test"])
        with server.session() as c:
            # Before any MAIL: the lookup ran at the connect stage.
            server.wait_for_log(r"filter: connect: client=127\.0\.0\.1:\d+: 127\.0\.0\.1 listed in bl\.test")
            for n in range(2):
                content = self.sign(message("Bob <bob@partner.test>", f"listed {n}"))
                self.assertEqual(c.send_message("bob@partner.test", ["carol@example.test"], content).code, 250)
        port = server.wait_for_log(r"session end: client=127\.0\.0\.1:(\d+) .*messages=2").group(1)
        log = server.log_text()
        self.assertEqual(len(re.findall(rf"filter: connect: client=127\.0\.0\.1:{port}: ", log)), 1, log)
        self.assertEqual(len(re.findall(rf"client=127\.0\.0\.1:{port} .*action=quarantine .*RCVD_IN_DNSBL=6\.0",
                                        log)), 2, log)

    def test_a_listed_client_is_refused_at_rcpt_when_configured(self):
        server = self.gateway(dnsbl=["bl.test"], reject_dnsbl_clients=True)
        with server.session() as c:
            self.assertEqual(c.command("MAIL FROM:<bob@partner.test>").code, 250)
            for rcpt in ("carol@example.test", "dave@example.test"):
                reply = c.command(f"RCPT TO:<{rcpt}>")
                self.assertEqual(reply.code, 550, str(reply))
                self.assertEqual(reply.lines[-1],
                                 "5.7.1 Client host blocked: 127.0.0.1 listed in bl.test (127.0.0.2)")
            # Nothing was accepted, so there is no message to send.
            self.assertEqual(c.command("DATA").code, 554)
        server.wait_for_log(r"filter: rcpt: client=127\.0\.0\.1:\d+ from=<bob@partner\.test> "
                            r"to=<carol@example\.test>: refused: 550 5\.7\.1 Client host blocked")
        self.assertEqual(server.maildir_files(), [])
        self.assertEqual(json.loads(self.held(server)), [])

    def test_an_spf_fail_is_refused_at_rcpt_when_configured_and_a_pass_goes_on(self):
        server = self.gateway(reject_spf_fail=True)
        with server.session() as c:
            self.assertEqual(c.command("MAIL FROM:<x@explained.test>").code, 250)
            reply = c.command("RCPT TO:<carol@example.test>")
            self.assertEqual(reply.code, 550, str(reply))
            # RFC 7372's code, and the domain's own explanation.
            self.assertEqual(reply.lines[-1],
                             "5.7.23 SPF validation failed: explained.test does not designate [127.0.0.1] "
                             "as a permitted sender: 127.0.0.1 is not a server of explained.test")
            self.assertEqual(c.command("RSET").code, 250)
            # Softfail is not fail: accepted at RCPT, weighed after DATA.
            self.assertEqual(c.send_message("x@softfail.test", ["carol@example.test"],
                                            message("x@softfail.test", "soft after a fail")).code, 250)
            content = self.sign(message("Bob <bob@partner.test>", "pass after a fail"))
            self.assertEqual(c.send_message("bob@partner.test", ["carol@example.test"], content).code, 250)
        self.assertIn("spf=softfail", self.results(self.delivered_after(server, b"Subject: soft after a fail")))
        self.assertIn("spf=pass", self.results(self.delivered_after(server, b"Subject: pass after a fail")))
        server.wait_for_log(r"filter: rcpt: client=127\.0\.0\.1:\d+ from=<x@explained\.test> "
                            r"to=<carol@example\.test>: refused: 550 5\.7\.23 SPF validation failed")

    def test_an_invalid_helo_is_refused_at_rcpt_when_configured(self):
        server = self.gateway(reject_invalid_helo=True)
        refused = {"localhost": "need fully-qualified hostname",
                   "127.0.0.1": "need fully-qualified hostname",
                   "[127.0.0.2]": "address literal is not the client's address",
                   rh.h.HOSTNAME: "that is our own hostname"}
        for helo, why in refused.items():
            with server.client() as c:
                self.assertEqual(c.greeting().code, 220)
                self.assertEqual(c.ehlo(helo).code, 250)  # EHLO itself is answered: the refusal comes at RCPT
                self.assertEqual(c.command("MAIL FROM:<bob@partner.test>").code, 250)
                reply = c.command("RCPT TO:<carol@example.test>")
                self.assertEqual(reply.code, 550, f"{helo}: {reply}")
                self.assertEqual(reply.lines[-1], f"5.7.1 <{helo}>: Helo command rejected: {why}")
        server.wait_for_log(r"filter: rcpt: client=127\.0\.0\.1:\d+ from=<bob@partner\.test> "
                            r"to=<carol@example\.test>: refused: 550 5\.7\.1 <localhost>: Helo command rejected")
        # A server that names itself, or gives its own address literal, goes on.
        for helo in ("mail.partner.test", "[127.0.0.1]"):
            with server.client() as c:
                self.assertEqual(c.greeting().code, 220)
                self.assertEqual(c.ehlo(helo).code, 250)
                content = self.sign(message("Bob <bob@partner.test>", f"helo {helo}"))
                self.assertEqual(c.send_message("bob@partner.test", ["carol@example.test"], content).code, 250)
        self.assertEqual(len(server.wait_for_messages(2)), 2)

    def test_a_listed_url_domain_is_spam_and_its_twin_passes(self):
        server = self.gateway(uribl=["uribl.test"])
        bad = self.sign(message("Bob <bob@partner.test>", "click", "Pay at https://pay.evil.test/now\r\n"))
        self.assertEqual(self.send(server, "bob@partner.test", bad).code, 250)
        self.assertIn("URIBL_LISTED", self.held(server))
        # 127.255.255.x is a refusal code, not a listing; unlisted domains pass.
        for host in ("pay.refused.test", "pay.partner.test"):
            good = self.sign(message("Bob <bob@partner.test>", f"link {host}", f"Pay at https://{host}/now\r\n"))
            self.assertEqual(self.send(server, "bob@partner.test", good).code, 250)
            delivered = self.delivered_after(server, f"Subject: link {host}".encode())
            self.assertTrue(delivered.filter_headers["X-mxgate-Verdict"].startswith("accept;"))


if __name__ == "__main__":
    unittest.main()
