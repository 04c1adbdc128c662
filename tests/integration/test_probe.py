"""`mxgate probe DOMAIN [--json] --config FILE` end to end, black box: the
DNS bed (dnsbed.py: a real nsd with DNSSEC-signed zones) names MX hosts on
loopback addresses where one receiving mxgate listens on port P (one listener
per address), and the probe's JSON report is checked per case:

  127.0.0.2   mx.dane-ok.test    signed zone, right TLSA: DANE-EE verified
  127.0.0.3   mx.dane-bad.test   signed zone, wrong TLSA: TLSA mismatch
  127.0.0.5   mx.insecure.test   unsigned zone: no TLSA lookup, anonymous TLS
  127.0.0.7   mx.notls.test      listener without STARTTLS
  bogus.test                     MX RRset altered after signing: bogus
  nullmx.test                    MX 0 . (RFC 7505)
  routed.test                    [[route]] smtp:[127.0.0.2]:P, no MX lookup

The probe never sends MAIL, so the receiver's spool stays empty.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import unittest
from pathlib import Path

import dnsbed
import mxgate_harness as h
import relay_helpers as rh

WAIT = 20.0


class ProbeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        missing = [t for t in ("nsd", "ldns-keygen", "ldns-signzone", "openssl") if not shutil.which(t)]
        if missing:
            raise unittest.SkipTest(f"{', '.join(missing)} missing (scripts/setup installs them)")
        cls.tmp = Path(tempfile.mkdtemp(prefix="mxgate-probe-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.port = p = rh.port_free_everywhere()
        certs = h.certs_dir()
        cls.digests = [dnsbed.spki_sha256(certs / "ecdsa.pem"), dnsbed.spki_sha256(certs / "rsa.pem")]
        cls.wrong = hashlib.sha256(b"not the certificate").hexdigest()

        def tlsa(host: str, digests: list[str]) -> list[str]:
            return [f"_{p}._tcp.{host} TLSA 3 1 1 {d}" for d in digests]

        zones = {
            "dane-ok.test": {"records": ["@ MX 10 mx", "mx A 127.0.0.2", *tlsa("mx", cls.digests)]},
            "dane-bad.test": {"records": ["@ MX 10 mx", "mx A 127.0.0.3", *tlsa("mx", [cls.wrong])]},
            "insecure.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.5"]},
            "notls.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.7"]},
            "bogus.test": {
                "records": ["@ MX 10 mx", "mx A 127.0.0.6", *tlsa("mx", cls.digests)],
                "tamper": ("IN MX 10 mx.bogus.test.", "IN MX 20 mx.bogus.test."),
            },
            "nullmx.test": {"records": ["@ MX 0 ."]},
        }
        cls.bed = dnsbed.DnsBed(cls.tmp / "bed", zones=zones)
        cls.addClassCleanup(cls.bed.close)
        cls.bed.start()

        # One receiving mxgate, one listener per MX address.
        cls.receiver = rh.LoopbackMxgate({
            "hostname": "mx.receiver.test",
            "listener": [{"host": "127.0.0.2", "port": p, "tls": "may"},
                         {"host": "127.0.0.3", "port": p, "tls": "may"},
                         {"host": "127.0.0.5", "port": p, "tls": "may"},
                         {"host": "127.0.0.7", "port": p, "tls": "none"}]})
        cls.addClassCleanup(cls.receiver.close)
        cls.receiver.start()

        # The prober's config only: it is never started as a server.
        cls.prober = rh.LoopbackMxgate({
            "listener": [{"host": "127.0.0.1", "tls": "none"}],
            "delivery": {"maildir": "mail", "mx_port": p, "tls": "dane"},
            "route": [{"domain": "routed.test", "next_hop": f"smtp:[127.0.0.2]:{p}", "tls": "encrypt"},
                      {"domain": "*", "next_hop": "mx"}],
        }, extra_toml=cls.bed.toml())
        cls.addClassCleanup(cls.prober.close)
        cls.prober.write_config()

    def probe(self, domain: str, json_output: bool = True):
        args = [str(h.BINARY), "probe", domain, *(["--json"] if json_output else []),
                "--config", str(self.prober.config_path)]
        proc = h.run(args, timeout=WAIT)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return json.loads(proc.stdout) if json_output else proc.stdout.decode()

    def only_host(self, report: dict) -> dict:
        self.assertEqual(len(report["hosts"]), 1, report)
        return report["hosts"][0]

    def test_dane_ok(self):
        r = self.probe("dane-ok.test")
        self.assertEqual(r["mx"]["security"], "secure", r)
        self.assertEqual(r["mx"]["records"], ["10 mx.dane-ok.test"])
        host = self.only_host(r)
        self.assertEqual(host["host"], "mx.dane-ok.test")
        self.assertEqual(host["addresses"], ["127.0.0.2"])
        self.assertEqual(host["security"], "secure")
        self.assertEqual(host["tlsa"]["security"], "secure")
        self.assertEqual(sorted(host["tlsa"]["records"]), sorted(f"3 1 1 {d}" for d in self.digests))
        self.assertEqual(host["tls_requirement"], "dane")
        c = host["connection"]
        self.assertTrue(c["connected"], c)
        self.assertTrue(c["greeting"].startswith("220"), c)
        self.assertTrue(c["starttls"], c)
        self.assertTrue(c["tls"], c)
        self.assertEqual(c["tls_version"], "TLSv1.3")
        self.assertTrue(c["dane_verified"], c)
        self.assertEqual(c["verification"], "DANE-EE")
        self.assertIn(c["peer_spki_sha256"], self.digests)
        self.assertIn("CN=", c["peer_subject"])
        self.assertEqual(c["error"], "", c)
        self.assertRegex(c["tls_summary"], r"^verified TLS \(DANE-EE\) TLSv1\.3 ")
        # Never MAIL: nothing reached the receiver's spool.
        self.assertEqual(self.receiver.queue_list(), [])
        self.assertEqual(self.receiver.maildir_files(), [])

    def test_dane_ok_text(self):
        text = self.probe("dane-ok.test", json_output=False)
        self.assertIn("host mx.dane-ok.test", text)
        self.assertIn("verification: DANE-EE", text)
        self.assertIn("STARTTLS: offered", text)

    def test_dane_wrong_tlsa(self):
        host = self.only_host(self.probe("dane-bad.test"))
        self.assertEqual(host["tlsa"]["records"], [f"3 1 1 {self.wrong}"])
        c = host["connection"]
        self.assertTrue(c["starttls"], c)
        self.assertFalse(c["dane_verified"], c)
        self.assertEqual(c["verification"], "TLSA mismatch")
        self.assertIn(c["peer_spki_sha256"], self.digests)  # the certificate is still reported

    def test_insecure(self):
        r = self.probe("insecure.test")
        self.assertEqual(r["mx"]["security"], "insecure")
        host = self.only_host(r)
        self.assertEqual(host["security"], "insecure")
        self.assertIsNone(host["tlsa"])
        self.assertEqual(host["tls_requirement"], "opportunistic")
        c = host["connection"]
        self.assertTrue(c["tls"], c)
        self.assertFalse(c["dane_verified"])
        self.assertRegex(c["tls_summary"], r"^anonymous TLS TLSv1\.3 ")

    def test_no_starttls(self):
        c = self.only_host(self.probe("notls.test"))["connection"]
        self.assertTrue(c["connected"], c)
        self.assertFalse(c["starttls"], c)
        self.assertFalse(c["tls"], c)
        self.assertEqual(c["tls_summary"], "cleartext")
        self.assertEqual(c["error"], "")

    def test_bogus(self):
        r = self.probe("bogus.test")
        self.assertEqual(r["mx"]["security"], "bogus", r)
        self.assertEqual(r["hosts"], [])
        self.assertIn("bogus", r["outcome"])

    def test_null_mx(self):
        r = self.probe("nullmx.test")
        self.assertTrue(r["mx"]["null_mx"], r)
        self.assertEqual(r["mx"]["records"], ["0 ."])
        self.assertEqual(r["hosts"], [])
        self.assertIn("null MX", r["outcome"])

    def test_route(self):
        r = self.probe("routed.test")
        self.assertIsNone(r["mx"])
        self.assertEqual(r["tls_level"], "encrypt")
        host = self.only_host(r)
        self.assertEqual(host["host"], "127.0.0.2")
        self.assertEqual(host["tls_requirement"], "encrypt")
        self.assertTrue(host["connection"]["tls"])

    def test_usage_and_config_error(self):
        proc = h.run([str(h.BINARY), "probe", "x.test", "--bad", "--config", str(self.prober.config_path)],
                     timeout=WAIT)
        self.assertNotEqual(proc.returncode, 0)
        proc = h.run([str(h.BINARY), "probe", "x.test", "--config", str(self.tmp / "missing.toml")], timeout=WAIT)
        self.assertEqual(proc.returncode, 1)


if __name__ == "__main__":
    unittest.main()
