"""The DNS test bed (dnsbed.py) checked with an independent validator:
unbound-host, given the bed's stub zones and trust anchors, must call each
zone secure, insecure or bogus as designed."""

import base64
import hashlib
import re
import shutil
import subprocess
import tempfile
import tomllib
import unittest
from pathlib import Path

import dnsbed

SMTP_PORT = 2525
MX_ADDRESS = "127.0.0.2"


def make_cert(directory: Path) -> Path:
    key, cert = directory / "cert.key", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", str(key), "-out", str(cert),
                    "-subj", "/CN=mx.dane-ok.test"], check=True, capture_output=True, timeout=60)
    return cert


def spki_digest_independently(cert: Path) -> str:
    """SHA-256 of the SPKI: the PEM "PUBLIC KEY" block is base64 of the DER SPKI."""
    pem = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return hashlib.sha256(base64.b64decode(body)).hexdigest()


def unbound_host(conf: Path, rrtype: str, name: str) -> str:
    proc = subprocess.run(["unbound-host", "-C", str(conf), "-v", "-t", rrtype, name],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return proc.stdout + proc.stderr


class DnsBedWithUnboundHost(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("nsd") or not shutil.which("unbound-host"):
            raise unittest.SkipTest("nsd and unbound-host are needed (scripts/setup installs them)")
        cls.tmp = Path(tempfile.mkdtemp(prefix="mxgate-dnsbed-test-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.cert = make_cert(cls.tmp)
        cls.digest = spki_digest_independently(cls.cert)
        cls.bed = dnsbed.DnsBed(cls.tmp / "bed", cert_path=cls.cert, smtp_port=SMTP_PORT,
                                mx_address=MX_ADDRESS)
        cls.addClassCleanup(cls.bed.close)
        cls.bed.start()
        cls.conf = cls.bed.unbound_conf(cls.tmp / "unbound.conf")

    def ask(self, rrtype: str, name: str) -> str:
        return unbound_host(self.conf, rrtype, name)

    def assertAnswer(self, rrtype: str, name: str, *patterns: str):
        out = self.ask(rrtype, name)
        for pattern in patterns:
            self.assertRegex(out, pattern, f"{rrtype} {name}")
        return out

    def test_dane_ok_is_secure(self):
        self.assertAnswer("MX", "dane-ok.test", r"mail is handled by 10 mx\.dane-ok\.test\. \(secure\)")
        self.assertAnswer("A", "mx.dane-ok.test", rf"has address {re.escape(MX_ADDRESS)} \(secure\)")
        out = self.assertAnswer("TLSA", f"_{SMTP_PORT}._tcp.mx.dane-ok.test", r"TLSA record 3 1 1 \S+ \(secure\)")
        self.assertIn(self.digest.upper(), out)

    def test_dane_bad_has_a_secure_wrong_digest(self):
        out = self.assertAnswer("TLSA", f"_{SMTP_PORT}._tcp.mx.dane-bad.test",
                                r"TLSA record 3 1 1 [0-9A-F]{64} \(secure\)")
        self.assertNotIn(self.digest.upper(), out)

    def test_bogus_is_bogus(self):
        self.assertAnswer("MX", "bogus.test", r"\(BOGUS \(security failure\)\)")
        self.assertAnswer("A", "mx.bogus.test", r"\(BOGUS \(security failure\)\)")

    def test_insecure_is_insecure(self):
        self.assertAnswer("MX", "insecure.test", r"mail is handled by 10 mx\.insecure\.test\. \(insecure\)")
        self.assertAnswer("A", "mx.insecure.test", r"\(insecure\)")
        self.assertNotIn("insecure.test.", " ".join(self.bed.trust_anchors))

    def test_null_mx(self):
        self.assertAnswer("MX", "nullmx.test", r"mail is handled by 0 \. \(secure\)")

    def test_nxdomain_and_nodata_are_proven(self):
        self.assertAnswer("MX", "nothere.dane-ok.test", r"NXDOMAIN.*\(secure\)")
        self.assertAnswer("AAAA", "mx.dane-ok.test", r"has no IPv6 address \(secure\)")

    def test_toml_section(self):
        dns = tomllib.loads(self.bed.toml())["dns"]
        self.assertEqual(dns["trust_anchor_files"], [])
        self.assertEqual({z["name"] for z in dns["stub_zone"]},
                         {"dane-ok.test", "dane-bad.test", "bogus.test", "insecure.test", "nullmx.test"})
        for zone in dns["stub_zone"]:
            self.assertEqual(zone["addresses"], [f"127.0.0.1@{self.bed.port}"])
        anchors = [t["rr"] for t in dns["trust_anchor"]]
        self.assertEqual(anchors, self.bed.trust_anchors)
        self.assertEqual(len(anchors), 4)
        for rr in anchors:
            self.assertRegex(rr, r"^[a-z-]+\.test\. IN DS \d+ 13 2 [0-9a-f]{64}$")


class CustomZones(unittest.TestCase):
    """The zone set the relay tests will build: several MX hosts, a tampered
    TLSA, a signed zone nobody anchors, DNSKEY anchors."""

    def setUp(self):
        if not shutil.which("nsd") or not shutil.which("unbound-host"):
            self.skipTest("nsd and unbound-host are needed")
        self.tmp = Path(tempfile.mkdtemp(prefix="mxgate-dnsbed-test-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_custom_zones(self):
        zones = {
            "multi.example": {"records": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.11",
                                          "mx2 A 127.0.0.12", "mx2 AAAA ::1",
                                          "_25._tcp.mx1 TLSA 3 1 1 " + "ab" * 32]},
            "tampered.example": {"records": ["@ MX 10 mx", "mx A 127.0.0.13",
                                             "_25._tcp.mx TLSA 3 1 1 " + "cd" * 32],
                                 "tamper": ("3 1 1 " + "cd" * 32, "3 1 1 " + "ef" * 32)},
            "unanchored.example": {"signed": True, "trust_anchor": False, "records": ["@ MX 5 mx"]},
        }
        bed = dnsbed.DnsBed(self.tmp / "bed", zones=zones)
        self.addCleanup(bed.close)
        bed.start()
        self.assertEqual(len(bed.trust_anchors), 2)
        conf = bed.unbound_conf(self.tmp / "unbound.conf")
        out = unbound_host(conf, "MX", "multi.example")
        self.assertIn("10 mx1.multi.example. (secure)", out)
        self.assertIn("20 mx2.multi.example. (secure)", out)
        self.assertIn("127.0.0.12 (secure)", unbound_host(conf, "A", "mx2.multi.example"))
        self.assertIn("(secure)", unbound_host(conf, "AAAA", "mx2.multi.example"))
        self.assertIn("(BOGUS (security failure))", unbound_host(conf, "TLSA", "_25._tcp.mx.tampered.example"))
        self.assertIn("(secure)", unbound_host(conf, "A", "mx.tampered.example"))
        self.assertIn("(insecure)", unbound_host(conf, "MX", "unanchored.example"))

        # DNSKEY anchors work as well as DS ones.
        ksk = [k for k in bed.dnskeys["multi.example"] if " 257 3 13 " in " ".join(k.split()) + " "]
        self.assertEqual(len(ksk), 1)
        text = conf.read_text()
        for rr in bed.trust_anchors:
            text = text.replace(rr, " ".join(ksk[0].split()) if rr.startswith("multi.example.") else rr)
        conf.write_text(text)
        self.assertIn("(secure)", unbound_host(conf, "MX", "multi.example"))

    def test_tamper_that_matches_nothing_raises(self):
        bed = dnsbed.DnsBed(self.tmp / "bed", zones={"t.example": {"records": ["@ MX 1 mx"],
                                                                   "tamper": ("IN A 198.51.100.9", "x")}})
        self.addCleanup(bed.close)
        with self.assertRaisesRegex(ValueError, "tamper"):
            bed.start()

    def test_stop_ends_nsd(self):
        bed = dnsbed.DnsBed(self.tmp / "bed", zones={"s.example": {"records": ["@ MX 1 mx"]}})
        self.addCleanup(bed.close)
        bed.start()
        pid = bed._proc.pid
        self.assertIsNotNone(dnsbed.udp_query(bed.port, "s.example", 6))
        bed.stop()
        self.assertIsNone(dnsbed.udp_query(bed.port, "s.example", 6, timeout=0.5))
        self.assertFalse(Path(f"/proc/{pid}").exists())
        # nsd -d forks "main" and "server 1" in the session it was started in:
        # none may be left, not even as a zombie.
        self.assertEqual(dnsbed._session_members(pid, running_only=False), [])


if __name__ == "__main__":
    unittest.main()
