"""mxgate's SPF (src/sender_auth/spf.hpp, RFC 7208 check_host()) against the
reference implementation python3-spf (pyspf), both asking the same real DNS:
a DNS test bed (dnsbed.py: nsd on 127.0.0.1, port chosen at run time) serving
~40 SPF scenarios.  Ours runs as the `spfq` tool (bench/tools/spfq.cpp)
through the libunbound Resolver (spf.test is DNSSEC-signed and anchored, so
the answers it evaluates are validated); pyspf runs in this process with
dnspython's default resolver pointed at the same nsd.  Every case must give
the same result from both, and the result written next to it (so the two
cannot agree on a wrong answer unnoticed); for exp= the explanation text
must match too.

Where the two implementations are known to differ the scenarios stay clear
of it (see spf.hpp for our choices): pyspf counts redirect= against the
lookup limit when it parses the record, we when it is evaluated; pyspf
resolves ptr and %{p}, we do not; pyspf compares modifier names
case-sensitively.  A few checks at the end are ours alone: DNSSEC-bogus
answers (pyspf does not validate), the limits' counters, usage errors.

Needs nsd, ldnsutils (dnsbed.py), python3-spf and python3-dnspython, and spfq
built next to MXGATE_BINARY (or in MXGATE_SOURCE_DIR/build)."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import warnings
from pathlib import Path

import dnsbed

SOURCE_DIR = Path(os.environ.get("MXGATE_SOURCE_DIR") or Path(__file__).resolve().parents[2])
BINARY = Path(os.environ.get("MXGATE_BINARY") or SOURCE_DIR / "build" / "mxgate")
SPFQ = BINARY.parent / "spfq"
QUERY_TIMEOUT_MS = 5000

try:
    import dns.resolver
    import spf
except ImportError:  # Debian's python3-spf/python3-dnspython under another python3 (pyenv)
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import dns.resolver
        import spf
    except ImportError:
        spf = None


def _limit_record(terms: int) -> str:
    return "v=spf1 " + "a:h.spf.test " * terms + "ip4:192.0.2.0/24 -all"


# Zone spf.test (signed, trust anchor): owner (relative) -> records.
SPF_TEST = [
    'pass TXT "v=spf1 ip4:192.0.2.0/24 -all"',
    'fail TXT "v=spf1 ip4:198.51.100.1 -all"',
    'softfail TXT "v=spf1 ip4:198.51.100.1 ~all"',
    'neutral TXT "v=spf1 ?all"',
    'default TXT "v=spf1 ip4:198.51.100.1"',
    'empty TXT "v=spf1"',
    'split TXT "v=spf1 ip4:192.0.2.0/24" " -all"',  # strings joined without a space
    'ip6 TXT "v=spf1 ip6:2001:db8:1::/48 -all"',
    'a TXT "v=spf1 a -all"',
    'a A 192.0.2.10',
    'a AAAA 2001:db8::10',
    'acidr TXT "v=spf1 a:host.spf.test/28 -all"',
    'host A 192.0.2.1',
    'a6cidr TXT "v=spf1 a:host6.spf.test//64 -all"',
    'host6 AAAA 2001:db8:6::1',
    'mx TXT "v=spf1 mx -all"',
    'mx MX 10 mx1.spf.test.',
    'mx MX 20 mx2.spf.test.',
    'mx1 A 192.0.2.20',
    'mx2 A 192.0.2.21',
    'mxcidr TXT "v=spf1 mx:mx.spf.test/30 -all"',
    'mx11 TXT "v=spf1 mx ip4:192.0.2.0/24 -all"',
    *[f"mx11 MX {i} mx1.spf.test." for i in range(11)],
    'mxvoid TXT "v=spf1 mx:mxv.spf.test -all"',
    'mxv MX 10 gone.spf.test.',
    'include TXT "v=spf1 include:inc.other.test -all"',
    'chain TXT "v=spf1 include:l1.spf.test -all"',
    'l1 TXT "v=spf1 include:l2.spf.test ~all"',
    'l2 TXT "v=spf1 ip4:192.0.2.40 -all"',
    'incfail TXT "v=spf1 include:fail.spf.test ?all"',
    'incnone TXT "v=spf1 include:nothing.spf.test -all"',
    'incperm TXT "v=spf1 include:syntax.spf.test +all"',
    'inctemp TXT "v=spf1 include:x.refused.test -all"',
    'redirect TXT "v=spf1 redirect=pass.spf.test"',
    'redirnone TXT "v=spf1 redirect=nothing.spf.test"',
    'redirall TXT "v=spf1 -all redirect=pass.spf.test"',
    'exists TXT "v=spf1 exists:%{ir}.%{v}.allow.spf.test -all"',
    '50.2.0.192.in-addr.allow A 127.0.0.2',
    "0.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.allow A 127.0.0.2",
    'existsl TXT "v=spf1 exists:%{l1r-}.users.spf.test -all"',
    'john.users A 127.0.0.2',
    'macro TXT "v=spf1 exists:%{d2}.%{l}.m.spf.test -all"',
    'spf.test.bob.m A 127.0.0.2',
    f'limit10 TXT "{_limit_record(10)}"',
    f'limit11 TXT "{_limit_record(11)}"',
    'h A 198.51.100.1',
    'void2 TXT "v=spf1 a:nx1.spf.test a:nx2.spf.test ip4:192.0.2.0/24 -all"',
    'void3 TXT "v=spf1 a:nx1.spf.test a:nx2.spf.test a:nx3.spf.test ip4:192.0.2.0/24 -all"',
    'syntax TXT "v=spf1 ip4:192.0.2.300 -all"',
    'syntaxmech TXT "v=spf1 ip4:192.0.2.0/24 foo -all"',
    'syntaxcidr TXT "v=spf1 a/33 -all"',
    'syntaxmacro TXT "v=spf1 ip4:192.0.2.0/24 exists:%(ir).sbl.spf.test -all"',
    'multiple TXT "v=spf1 -all"',
    'multiple TXT "v=spf1 +all"',
    'nospf TXT "google-site-verification=abc"',
    'unknownmod TXT "v=spf1 moo.cow-far_out=man:dog/cat ip4:192.0.2.0/24 -all"',
    'exp TXT "v=spf1 ip4:198.51.100.1 -all exp=explain.spf.test"',
    "explain TXT \"%{i} is not one of %{d}'s designated mail servers.\"",
    'loop TXT "v=spf1 include:loopb.spf.test -all"',
    'loopb TXT "v=spf1 include:loop.spf.test -all"',
    'case TXT "V=SPF1 -IP4:198.51.100.1 INCLUDE:INC.Other.TEST. -ALL"',
    'mail TXT "v=spf1 a -all"',
    'mail A 192.0.2.60',
    'ptr TXT "v=spf1 ptr -all"',
]

ZONES = {
    "spf.test": {"signed": True, "records": SPF_TEST},
    "other.test": {"signed": False, "records": ['inc TXT "v=spf1 ip4:192.0.2.30 -all"']},
    # Only for pyspf's PTR lookups (ptr): an empty reverse zone, so NXDOMAIN.
    "2.0.192.in-addr.arpa": {"signed": False, "records": []},
    # Ours only: the record is altered after signing, so validation fails.
    "bogus.test": {
        "signed": True,
        "records": ['@ TXT "v=spf1 ip4:192.0.2.0/24 -all"'],
        "tamper": ("ip4:192.0.2.0/24", "ip4:192.0.2.0/25"),
    },
}

V4 = "192.0.2.50"
HELO = "mail.spf.test"

# (client ip, helo, sender or None for the HELO identity, expected result)
CASES = [
    (V4, HELO, "user@pass.spf.test", "pass"),
    ("::ffff:192.0.2.50", HELO, "user@pass.spf.test", "pass"),  # IPv4-mapped: IPv4
    (V4, HELO, "user@fail.spf.test", "fail"),
    (V4, HELO, "user@softfail.spf.test", "softfail"),
    (V4, HELO, "user@neutral.spf.test", "neutral"),
    (V4, HELO, "user@default.spf.test", "neutral"),
    (V4, HELO, "user@empty.spf.test", "neutral"),
    (V4, HELO, "user@split.spf.test", "pass"),
    ("2001:db8:1::5", HELO, "user@ip6.spf.test", "pass"),
    (V4, HELO, "user@ip6.spf.test", "fail"),
    ("192.0.2.10", HELO, "user@a.spf.test", "pass"),
    ("2001:db8::10", HELO, "user@a.spf.test", "pass"),
    ("192.0.2.11", HELO, "user@a.spf.test", "fail"),
    ("192.0.2.5", HELO, "user@acidr.spf.test", "pass"),
    ("192.0.2.17", HELO, "user@acidr.spf.test", "fail"),
    ("2001:db8:6::99", HELO, "user@a6cidr.spf.test", "pass"),
    ("192.0.2.21", HELO, "user@mx.spf.test", "pass"),
    ("192.0.2.22", HELO, "user@mx.spf.test", "fail"),
    ("192.0.2.22", HELO, "user@mxcidr.spf.test", "pass"),
    (V4, HELO, "user@mx11.spf.test", "permerror"),
    (V4, HELO, "user@mxvoid.spf.test", "fail"),
    ("192.0.2.30", HELO, "user@include.spf.test", "pass"),
    ("192.0.2.40", HELO, "user@chain.spf.test", "pass"),
    ("192.0.2.41", HELO, "user@chain.spf.test", "fail"),
    ("192.0.2.30", HELO, "user@incfail.spf.test", "neutral"),
    (V4, HELO, "user@incnone.spf.test", "permerror"),
    (V4, HELO, "user@incperm.spf.test", "permerror"),
    (V4, HELO, "user@inctemp.spf.test", "temperror"),
    (V4, HELO, "user@redirect.spf.test", "pass"),
    (V4, HELO, "user@redirnone.spf.test", "permerror"),
    (V4, HELO, "user@redirall.spf.test", "fail"),
    (V4, HELO, "user@exists.spf.test", "pass"),
    ("192.0.2.51", HELO, "user@exists.spf.test", "fail"),
    ("2001:db8::50", HELO, "user@exists.spf.test", "pass"),
    (V4, HELO, "john-smith@existsl.spf.test", "pass"),
    (V4, HELO, "smith-john@existsl.spf.test", "fail"),
    (V4, HELO, "bob@macro.spf.test", "pass"),
    (V4, HELO, "user@limit10.spf.test", "pass"),
    (V4, HELO, "user@limit11.spf.test", "permerror"),
    (V4, HELO, "user@void2.spf.test", "pass"),
    (V4, HELO, "user@void3.spf.test", "permerror"),
    (V4, HELO, "user@syntax.spf.test", "permerror"),
    (V4, HELO, "user@syntaxmech.spf.test", "permerror"),
    (V4, HELO, "user@syntaxcidr.spf.test", "permerror"),
    (V4, HELO, "user@syntaxmacro.spf.test", "permerror"),
    (V4, HELO, "user@multiple.spf.test", "permerror"),
    (V4, HELO, "user@nospf.spf.test", "none"),
    (V4, HELO, "user@nothere.spf.test", "none"),
    (V4, HELO, "user@unknownmod.spf.test", "pass"),
    (V4, HELO, "user@exp.spf.test", "fail"),
    (V4, HELO, "user@loop.spf.test", "permerror"),
    ("192.0.2.30", HELO, "user@case.spf.test", "pass"),
    ("192.0.2.31", HELO, "User@CASE.Spf.Test", "fail"),
    (V4, HELO, "user@ptr.spf.test", "fail"),
    (V4, HELO, "user@x.refused.test", "temperror"),
    # The null sender is postmaster@HELO; None is the HELO identity itself.
    ("192.0.2.60", HELO, "", "pass"),
    ("192.0.2.61", HELO, "", "fail"),
    ("192.0.2.60", HELO, None, "pass"),
    ("192.0.2.61", HELO, None, "fail"),
    ("192.0.2.61", "nothing.spf.test", None, "none"),
]


class Verdict:
    def __init__(self, stdout: str):
        lines = stdout.splitlines()
        self.result, _, self.text = lines[0].partition(" ")
        self.fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)

    def __repr__(self):
        return f"{self.result} {self.text!r} {self.fields}"


@unittest.skipIf(spf is None, "python3-spf and python3-dnspython are needed (scripts/setup installs them)")
class SpfAgainstPyspf(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not SPFQ.exists():
            raise unittest.SkipTest(f"{SPFQ} not built")
        if not shutil.which("nsd"):
            raise unittest.SkipTest("nsd is needed (scripts/setup installs it)")
        cls.tmp = Path(tempfile.mkdtemp(prefix="mxgate-spf-oracle-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.bed = dnsbed.DnsBed(cls.tmp / "bed", zones=ZONES)
        cls.addClassCleanup(cls.bed.close)
        cls.bed.start()
        # pyspf asks dnspython's default resolver: only the bed, nothing else.
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = cls.bed.port
        resolver.timeout = resolver.lifetime = QUERY_TIMEOUT_MS / 1000
        cls._saved_resolver = dns.resolver.default_resolver
        dns.resolver.default_resolver = resolver
        cls.addClassCleanup(setattr, dns.resolver, "default_resolver", cls._saved_resolver)
        # refused.test is a stub to nsd, which does not serve it: REFUSED,
        # a temporary error for both implementations.
        cls.resolver_args = ["--timeout-ms", str(QUERY_TIMEOUT_MS), "--stub", f"refused.test={cls.bed.address}"]
        for name, address in cls.bed.stub_zones:
            cls.resolver_args += ["--stub", f"{name}={address}"]
        for rr in cls.bed.trust_anchors:
            cls.resolver_args += ["--ta", rr]

    def spfq(self, ip: str, helo: str, sender: str | None, *extra: str, expect_rc: int = 0) -> Verdict:
        cmd = [str(SPFQ), *self.resolver_args, "--verbose", *extra]
        cmd += ["--helo", ip, helo] if sender is None else [ip, helo, sender]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(proc.returncode, expect_rc, f"{cmd}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return Verdict(proc.stdout)

    @staticmethod
    def pyspf(ip: str, helo: str, sender: str | None) -> tuple[str, str]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dnspython's query() is deprecated
            return spf.check2(i=ip, s=sender or "", h=helo, timeout=QUERY_TIMEOUT_MS / 1000)

    def test_every_case_matches_pyspf(self):
        started = time.monotonic()
        for ip, helo, sender, expected in CASES:
            with self.subTest(ip=ip, helo=helo, sender=sender):
                ours = self.spfq(ip, helo, sender)
                theirs, explanation = self.pyspf(ip, helo, sender)
                self.assertEqual((ours.result, theirs), (expected, expected),
                                 f"ours: {ours}\npyspf: {theirs} {explanation!r}")
        self.assertLess(time.monotonic() - started, 50)

    def test_null_sender_is_postmaster_at_helo(self):
        for ip in ("192.0.2.60", "192.0.2.61"):
            mail_from = self.spfq(ip, HELO, "<>")
            helo = self.spfq(ip, HELO, None)
            self.assertEqual((mail_from.result, mail_from.fields["domain"]), (helo.result, HELO))

    def test_explanation_matches_pyspf(self):
        ours = self.spfq(V4, HELO, "user@exp.spf.test")
        theirs, explanation = self.pyspf(V4, HELO, "user@exp.spf.test")
        self.assertEqual(theirs, "fail")
        self.assertEqual(ours.text, explanation)
        self.assertEqual(ours.text, "192.0.2.50 is not one of exp.spf.test's designated mail servers.")
        self.assertEqual(ours.fields["explanation"], ours.text)

    def test_limits_are_counted_at_and_past_the_limit(self):
        at = self.spfq(V4, HELO, "user@limit10.spf.test")
        self.assertEqual((at.result, at.fields["dns_lookups"]), ("pass", "10"), at)
        past = self.spfq(V4, HELO, "user@limit11.spf.test")
        self.assertEqual((past.result, past.fields["dns_lookups"]), ("permerror", "11"), past)
        self.assertIn("more than 10 DNS-querying terms", past.text)
        void2 = self.spfq(V4, HELO, "user@void2.spf.test")
        self.assertEqual((void2.result, void2.fields["void_lookups"]), ("pass", "2"), void2)
        void3 = self.spfq(V4, HELO, "user@void3.spf.test")
        self.assertEqual((void3.result, void3.fields["void_lookups"]), ("permerror", "3"), void3)
        self.assertEqual(self.spfq(V4, HELO, "user@void2.spf.test", "--max-void", "1").result, "permerror")
        self.assertEqual(self.spfq(V4, HELO, "user@limit11.spf.test", "--max-lookups", "11").result, "pass")
        mx = self.spfq(V4, HELO, "user@mx11.spf.test", "--max-mx", "11")
        self.assertEqual(mx.result, "pass", mx)

    def test_bogus_answers_are_temperror(self):
        # pyspf does not validate DNSSEC and would say pass; the validating
        # resolver refuses the altered record.
        verdict = self.spfq(V4, HELO, "user@bogus.test")
        self.assertEqual(verdict.result, "temperror", verdict)
        self.assertIn("DNSSEC", verdict.text)

    def test_usage_errors(self):
        for args in ([V4, HELO], ["not-an-ip", HELO, "a@b.test"], ["--helo", V4, HELO, "extra"],
                     ["--timeout-ms", "0", V4, HELO, ""], ["--bogus-option", "x", V4, HELO, ""]):
            proc = subprocess.run([str(SPFQ), *args], capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
            self.assertEqual(proc.returncode, 2, (args, proc))
            self.assertIn("usage:", proc.stderr)


if __name__ == "__main__":
    unittest.main()
