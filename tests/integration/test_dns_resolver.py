"""mxgate's DNSSEC-validating resolver (src/dns, libunbound) against the DNS
test bed: real signed zones served by nsd on loopback, asked through the
`dnsq` tool (bench/tools/dnsq.cpp), which prints what dns::Resolver answered.

Covers secure, insecure and bogus answers, nxdomain and nodata (proven by
NSEC), the null MX, TLSA, DS and DNSKEY trust anchors, a wrong anchor, a
signed zone without anchor, a stub server that is not there or never answers
(failure within the timeout), and destroying the resolver with queries
pending."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

import dnsbed

SOURCE_DIR = Path(os.environ.get("MXGATE_SOURCE_DIR") or Path(__file__).resolve().parents[2])
BINARY = Path(os.environ.get("MXGATE_BINARY") or SOURCE_DIR / "build" / "mxgate")
DNSQ = BINARY.parent / "dnsq"
SMTP_PORT = 25
MX_ADDRESS = "127.0.0.3"


class Answer:
    def __init__(self, qtype: str, name: str, lines: list[str]):
        self.qtype, self.name = qtype, name
        m = re.fullmatch(r"status=(\w+) security=(\w+)", lines[0])
        if not m:
            raise AssertionError(f"unexpected dnsq output for {qtype} {name}: {lines}")
        self.status, self.security = m.group(1), m.group(2)
        self.elapsed_ms = int(lines[1].removeprefix("elapsed_ms="))
        rest = lines[2:]
        self.reason = rest[0].removeprefix("reason=") if rest and rest[0].startswith("reason=") else ""
        self.records = rest[1:] if self.reason else rest

    def __repr__(self):
        return (f"{self.qtype} {self.name}: status={self.status} security={self.security} "
                f"reason={self.reason!r} records={self.records}")


def dnsq(args: list[str], queries: list[tuple[str, str]], timeout: float = 120) -> dict:
    """Runs dnsq once with all queries (they run concurrently); answers by (TYPE, NAME)."""
    cmd = [str(DNSQ)] + args
    for qtype, name in queries:
        cmd += [qtype, name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"dnsq exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    answers = {}
    for block in re.split(r"^query ", proc.stdout, flags=re.M)[1:]:
        lines = block.splitlines()
        qtype, name = lines[0].split(" ", 1)
        answers[(qtype, name)] = Answer(qtype, name, lines[1:])
    if len(answers) != len(queries):
        raise AssertionError(f"dnsq answered {len(answers)} of {len(queries)}:\n{proc.stdout}")
    return answers


def stub_args(bed: dnsbed.DnsBed, anchors: list[str] | None = None) -> list[str]:
    args = []
    for name, address in bed.stub_zones:
        args += ["--stub", f"{name}={address}"]
    for rr in bed.trust_anchors if anchors is None else anchors:
        args += ["--ta", rr]
    return args


class ResolverAgainstBed(unittest.TestCase):
    QUERIES = [
        ("MX", "dane-ok.test"),
        ("ADDR", "mx.dane-ok.test"),
        ("TLSA", f"_{SMTP_PORT}._tcp.mx.dane-ok.test"),
        ("TLSA", f"_{SMTP_PORT}._tcp.mx.dane-bad.test"),
        ("MX", "bogus.test"),
        ("ADDR", "mx.bogus.test"),
        ("MX", "insecure.test"),
        ("ADDR", "mx.insecure.test"),
        ("TLSA", f"_{SMTP_PORT}._tcp.mx.insecure.test"),
        ("MX", "nullmx.test"),
        ("MX", "nothere.dane-ok.test"),
        ("MX", "nothere.insecure.test"),
        ("MX", "mx.dane-ok.test"),
        ("ADDR", "dane-ok.test"),
        ("TLSA", "_26._tcp.mx.dane-ok.test"),
        ("MX", "DANE-OK.Test."),
    ]

    @classmethod
    def setUpClass(cls):
        if not DNSQ.exists():
            raise unittest.SkipTest(f"{DNSQ} not built")
        if not shutil.which("nsd"):
            raise unittest.SkipTest("nsd is needed (scripts/setup installs it)")
        cls.tmp = Path(tempfile.mkdtemp(prefix="mxgate-dnsq-test-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        key, cert = cls.tmp / "mx.key", cls.tmp / "mx.pem"
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", str(key), "-out", str(cert),
                        "-subj", "/CN=mx.dane-ok.test"], check=True, capture_output=True, timeout=60)
        cls.digest = dnsbed.spki_sha256(cert)
        cls.bed = dnsbed.DnsBed(cls.tmp / "bed", cert_path=cert, smtp_port=SMTP_PORT, mx_address=MX_ADDRESS)
        cls.addClassCleanup(cls.bed.close)
        cls.bed.start()
        started = time.monotonic()
        cls.answers = dnsq(stub_args(cls.bed), cls.QUERIES)
        cls.batch_seconds = time.monotonic() - started

    def answer(self, qtype, name) -> Answer:
        return self.answers[(qtype, name)]

    def assertStatus(self, qtype, name, status, security, records=None):
        a = self.answer(qtype, name)
        self.assertEqual((a.status, a.security), (status, security), a)
        if records is not None:
            self.assertEqual(a.records, records, a)
        return a

    def test_secure_mx_address_tlsa(self):
        self.assertStatus("MX", "dane-ok.test", "ok", "secure", ["10 mx.dane-ok.test"])
        self.assertStatus("ADDR", "mx.dane-ok.test", "ok", "secure", [MX_ADDRESS])
        self.assertStatus("TLSA", f"_{SMTP_PORT}._tcp.mx.dane-ok.test", "ok", "secure",
                          [f"3 1 1 {self.digest}"])

    def test_dane_bad_is_secure_with_another_digest(self):
        a = self.assertStatus("TLSA", f"_{SMTP_PORT}._tcp.mx.dane-bad.test", "ok", "secure")
        self.assertEqual(len(a.records), 1)
        self.assertRegex(a.records[0], r"^3 1 1 [0-9a-f]{64}$")
        self.assertNotEqual(a.records[0], f"3 1 1 {self.digest}")

    def test_bogus_is_failure(self):
        for qtype, name in [("MX", "bogus.test"), ("ADDR", "mx.bogus.test")]:
            a = self.assertStatus(qtype, name, "failure", "bogus", [])
            self.assertIn("validation", a.reason.lower(), a)

    def test_insecure(self):
        self.assertStatus("MX", "insecure.test", "ok", "insecure", ["10 mx.insecure.test"])
        self.assertStatus("ADDR", "mx.insecure.test", "ok", "insecure", [MX_ADDRESS])
        self.assertStatus("TLSA", f"_{SMTP_PORT}._tcp.mx.insecure.test", "nxdomain", "insecure", [])

    def test_null_mx(self):
        self.assertStatus("MX", "nullmx.test", "ok", "secure", ["0 ."])

    def test_nxdomain(self):
        self.assertStatus("MX", "nothere.dane-ok.test", "nxdomain", "secure", [])
        self.assertStatus("MX", "nothere.insecure.test", "nxdomain", "insecure", [])

    def test_nodata(self):
        self.assertStatus("MX", "mx.dane-ok.test", "nodata", "secure", [])
        self.assertStatus("ADDR", "dane-ok.test", "nodata", "secure", [])
        # Only _25._tcp.mx exists: _26._tcp.mx is an NSEC-proven nxdomain.
        self.assertStatus("TLSA", "_26._tcp.mx.dane-ok.test", "nxdomain", "secure", [])

    def test_names_are_case_and_dot_insensitive(self):
        self.assertStatus("MX", "DANE-OK.Test.", "ok", "secure", ["10 mx.dane-ok.test"])

    def test_batch_is_fast(self):
        # All 16 lookups run concurrently against a local server.
        self.assertLess(self.batch_seconds, 20, self.batch_seconds)

    def test_dnskey_anchor(self):
        ksk = next(k for k in self.bed.dnskeys["dane-ok.test"] if " 257 3 13 " in " ".join(k.split()) + " ")
        anchors = [" ".join(ksk.split())]
        a = dnsq(stub_args(self.bed, anchors), [("MX", "dane-ok.test")])[("MX", "dane-ok.test")]
        self.assertEqual((a.status, a.security, a.records), ("ok", "secure", ["10 mx.dane-ok.test"]), a)

    def test_signed_zone_without_anchor_is_insecure(self):
        a = dnsq(stub_args(self.bed, []), [("MX", "dane-ok.test")])[("MX", "dane-ok.test")]
        self.assertEqual((a.status, a.security), ("ok", "insecure"), a)

    def test_wrong_anchor_is_bogus(self):
        # dane-bad's DS, claimed for dane-ok: no key of dane-ok matches it.
        bad_ds = next(rr for rr in self.bed.trust_anchors if rr.startswith("dane-bad.test."))
        anchors = [bad_ds.replace("dane-bad.test.", "dane-ok.test.", 1)]
        a = dnsq(stub_args(self.bed, anchors), [("MX", "dane-ok.test")])[("MX", "dane-ok.test")]
        self.assertEqual((a.status, a.security), ("failure", "bogus"), a)


class ResolverFailures(unittest.TestCase):
    def setUp(self):
        if not DNSQ.exists():
            self.skipTest(f"{DNSQ} not built")

    def test_nothing_listening_fails_within_timeout(self):
        port = dnsbed.free_port()
        started = time.monotonic()
        a = dnsq(["--stub", f"gone.test=127.0.0.1@{port}", "--timeout-ms", "1500"],
                 [("MX", "gone.test"), ("ADDR", "mx.gone.test"), ("TLSA", "_25._tcp.mx.gone.test")])
        wall = time.monotonic() - started
        for answer in a.values():
            self.assertEqual(answer.status, "failure", answer)
            self.assertLessEqual(answer.elapsed_ms, 1500 + 500, answer)
        self.assertLess(wall, 10, wall)

    def test_silent_server_times_out(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
            hole.bind(("127.0.0.1", 0))  # receives, never answers
            port = hole.getsockname()[1]
            a = dnsq(["--stub", f"silent.test=127.0.0.1@{port}", "--timeout-ms", "700"],
                     [("MX", "silent.test")])[("MX", "silent.test")]
        self.assertEqual(a.status, "failure", a)
        self.assertIn("timed out", a.reason, a)
        self.assertGreaterEqual(a.elapsed_ms, 700, a)
        self.assertLess(a.elapsed_ms, 3000, a)

    def test_destroying_resolver_ends_pending_queries(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
            hole.bind(("127.0.0.1", 0))
            port = hole.getsockname()[1]
            started = time.monotonic()
            a = dnsq(["--stub", f"silent.test=127.0.0.1@{port}", "--timeout-ms", "30000",
                      "--destroy-after-ms", "300"],
                     [("MX", "silent.test"), ("ADDR", "mx.silent.test"), ("TLSA", "_25._tcp.mx.silent.test")])
            wall = time.monotonic() - started
        for answer in a.values():
            self.assertEqual(answer.status, "failure", answer)
            self.assertIn("resolver shut down", answer.reason, answer)  # ADDR: "A: ...; AAAA: ..."
            self.assertLess(answer.elapsed_ms, 5000, answer)
        self.assertLess(wall, 10, wall)

    def test_bad_options_are_named(self):
        for args, needle in [
            (["--ta", "dane-ok.test. IN DS 1 13 2 nothex"], "dane-ok.test. IN DS 1 13 2 nothex"),
            (["--ta-file", "/nonexistent/root.key"], "/nonexistent/root.key"),
            (["--stub", "x.test=127.0.0.1@70000"], "127.0.0.1@70000"),
        ]:
            proc = subprocess.run([str(DNSQ)] + args + ["MX", "x.test"], capture_output=True, text=True,
                                  timeout=60)
            self.assertEqual(proc.returncode, 1, proc)
            self.assertIn(needle, proc.stderr)


if __name__ == "__main__":
    unittest.main()
