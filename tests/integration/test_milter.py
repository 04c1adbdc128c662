"""Milters through the running gateway: a real clamav-milter (Debian) on a
Unix socket, talking to a real clamd (clamdbed.py), named in the listener's
`milters`.  mxgate's own clamd check is off here, so what happens is the
milter's doing: EICAR is refused with the milter's own reply, a clean
message is delivered with the header the milter added, and a milter that is
gone tempfails instead of passing mail unchecked."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import unittest
from pathlib import Path

from clamdbed import ClamdBed, eicar
from mxgate_harness import session, start_server
from test_filter import message

CLAMAV_MILTER = "/usr/sbin/clamav-milter"
START_TIMEOUT = 30.0


class ClamavMilter:
    """clamav-milter in the foreground on work/clamav-milter.sock, scanning through bed's clamd."""

    def __init__(self, bed: ClamdBed):
        self.dir = bed.workdir
        self.socket = self.dir / "clamav-milter.sock"
        conf = self.dir / "clamav-milter.conf"
        conf.write_text(
            f"MilterSocket unix:{self.socket}\nFixStaleSocket yes\nForeground yes\n"
            f"PidFile {self.dir / 'clamav-milter.pid'}\nClamdSocket unix:{bed.socket_path}\n"
            f"TemporaryDirectory {self.dir}\nOnClean Accept\nOnInfected Reject\nOnFail Defer\n"
            "RejectMsg Virus found: %v\nAddHeader Replace\nReportHostname mx.example.test\n"
            f"LogFile {self.dir / 'clamav-milter.log'}\nLogInfected Basic\n")
        self.proc = subprocess.Popen([CLAMAV_MILTER, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("clamav-milter did not start")
            time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        return f"unix:{self.socket}"

    def stop(self) -> None:
        # libmilter daemons take ~4.5 s to act on SIGTERM; nothing of theirs
        # needs a clean exit here, so SIGKILL follows shortly.
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(0.3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class MilterTest(unittest.TestCase):
    def setUp(self):
        self.bed = ClamdBed(max_stream=4 << 20)
        self.addCleanup(self.bed.close)
        self.bed.start()
        self.milter = ClamavMilter(self.bed)
        self.addCleanup(self.milter.stop)
        self.server = start_server(self, {
            "accept_domains": ["example.test"],
            "listener": [{"tls": "may", "milters": [self.milter.endpoint]}],
        })

    def send(self, content: bytes):
        with session(self.server) as c:
            return c.send_message("bob@partner.test", ["carol@example.test"], content)

    def test_infected_mail_gets_the_milters_refusal(self):
        reply = self.send(message("virus", attachments=[("x.bin", "application/octet-stream", eicar())]))
        self.assertEqual(reply.code, 550, str(reply))
        self.assertEqual(reply.lines[-1], "5.7.1 Virus found: Eicar-Signature.UNOFFICIAL")
        self.server.assert_nothing_stored(self, settle=0.3)
        self.server.wait_for_log(r"filter: \S+: milters unix:\S+clamav-milter\.sock=reject")
        self.server.wait_for_log(r"action=reject .*MILTER\(unix:\S+\)=reject")

    def test_clean_mail_is_delivered_with_the_milters_header(self):
        reply = self.send(message("clean", body="Nothing to see."))
        self.assertEqual(reply.code, 250, str(reply))
        [delivered] = self.server.wait_for_messages(1)
        self.assertRegex(delivered.raw, rb"\nX-Virus-Scanned: clamav-milter \S+ at mx\.example\.test\r?\n")
        self.assertIn(b"X-Virus-Status: Clean", delivered.raw)
        self.assertTrue(delivered.filter_headers["X-mxgate-Verdict"].startswith("accept;"))

    def test_a_milter_that_is_gone_tempfails(self):
        self.milter.stop()
        reply = self.send(message("unchecked"))
        self.assertEqual(reply.code, 451, str(reply))
        self.server.assert_nothing_stored(self, settle=0.3)
        self.server.wait_for_log(r"action=tempfail .*failed=\"milter: ")


if __name__ == "__main__":
    unittest.main()
