"""The clamd test bed (clamdbed.py) checked by speaking clamd's protocol
directly: a raw zINSTREAM over the bed's Unix socket, written here apart from
the bed's own helpers, must find EICAR and pass a clean file, and the bed's
limits, helpers and clean-up must do what its docstring says."""

import base64
import os
import socket
import struct
import tempfile
import time
import unittest
from pathlib import Path

import clamdbed

MAX_STREAM = 1 << 20


def raw_instream(path: Path, data: bytes, chunk: int = 8192) -> bytes:
    """clamd(8) INSTREAM, by hand: "zINSTREAM\\0", <u32 big-endian length><bytes>...,
    <u32 0>; the reply ends with a NUL.  Returns the reply with its NUL."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(b"zINSTREAM\0")
        for at in range(0, len(data), chunk):
            piece = data[at:at + chunk]
            s.sendall(struct.pack(">I", len(piece)) + piece)
        s.sendall(b"\0\0\0\0")
        reply = b""
        while not reply.endswith(b"\0"):
            got = s.recv(4096)
            if not got:
                break
            reply += got
        return reply


def mail_with_attachment(payload: bytes) -> bytes:
    body = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: report\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            b"--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"report.com\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body +
            b"--b1--\r\n")


@unittest.skipUnless(os.path.exists(clamdbed.CLAMD), "clamav-daemon is not installed")
class ClamdBedProtocolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bed = clamdbed.ClamdBed(None, max_stream=MAX_STREAM).start()
        print(f"\nclamd ready {cls.bed.start_seconds * 1000:.0f} ms after start", flush=True)

    @classmethod
    def tearDownClass(cls):
        cls.bed.close()

    def test_eicar_is_found(self):
        self.assertEqual(len(clamdbed.eicar()), 68)
        self.assertEqual(raw_instream(self.bed.socket_path, clamdbed.eicar()),
                         b"stream: Eicar-Signature.UNOFFICIAL FOUND\0")

    def test_clean_file_is_ok(self):
        self.assertEqual(raw_instream(self.bed.socket_path, b"Subject: hi\r\n\r\nNothing to see.\r\n"),
                         b"stream: OK\0")
        # One byte short of EICAR is not EICAR: the signature is the whole string.
        self.assertEqual(raw_instream(self.bed.socket_path, clamdbed.eicar()[:-1]), b"stream: OK\0")
        self.assertEqual(raw_instream(self.bed.socket_path, b""), b"stream: OK\0")

    def test_eicar_inside_a_mail_attachment_is_found(self):
        # What the gateway tests will send: clamd decodes the MIME parts itself.
        self.assertEqual(raw_instream(self.bed.socket_path, mail_with_attachment(clamdbed.eicar())),
                         b"stream: Eicar-Signature.UNOFFICIAL FOUND\0")
        self.assertEqual(raw_instream(self.bed.socket_path, mail_with_attachment(b"just bytes " * 50)),
                         b"stream: OK\0")

    def test_eicar_split_across_chunks_is_found(self):
        data = b"x" * 1000 + clamdbed.eicar() + b"y" * 1000
        self.assertEqual(raw_instream(self.bed.socket_path, data, chunk=7),
                         b"stream: Eicar-Signature.UNOFFICIAL FOUND\0")

    @unittest.skipUnless((clamdbed.TESTFILES / "clam.exe").exists(), "clamav-testfiles is not installed")
    def test_clamav_testfiles_are_found(self):
        for name in ("clam.exe", "clam.zip", "clam.mail", "clam.tar.gz"):
            with self.subTest(name=name):
                data = (clamdbed.TESTFILES / name).read_bytes()
                self.assertEqual(self.bed.instream(data), "stream: " + clamdbed.TESTFILE_SIGNATURE + " FOUND")

    def test_stream_limit_at_and_one_past(self):
        at = b"x" * (MAX_STREAM - 68) + clamdbed.eicar()
        self.assertEqual(self.bed.instream(at), "stream: " + clamdbed.EICAR_SIGNATURE + " FOUND")
        self.assertEqual(self.bed.instream(b"x" * (MAX_STREAM + 1)), "INSTREAM size limit exceeded. ERROR")
        # Far past it clamd hangs up mid-send; the reply is there all the same.
        self.assertEqual(self.bed.instream(b"x" * (4 * MAX_STREAM)), "INSTREAM size limit exceeded. ERROR")
        self.assertTrue(self.bed.ping())

    def test_helpers_agree_with_the_raw_protocol(self):
        self.assertTrue(self.bed.ping())
        self.assertEqual(self.bed.instream(clamdbed.eicar()), "stream: " + clamdbed.EICAR_SIGNATURE + " FOUND")
        self.assertEqual(self.bed.instream(b"clean"), "stream: OK")
        self.assertEqual(self.bed.endpoint, f"unix:{self.bed.socket_path}")
        self.assertEqual(self.bed.filter_toml(),
                         f'clamd = "unix:{self.bed.socket_path}"\nclamd_max_stream = {MAX_STREAM}\n')

    def test_no_file_holds_the_eicar_string(self):
        here = Path(__file__).resolve().parent
        for path in (here / "clamdbed.py", Path(__file__).resolve()):
            self.assertNotIn(clamdbed.eicar(), path.read_bytes(), path)
        # The database holds it only as hex.
        self.assertNotIn(clamdbed.eicar(), (self.bed.workdir / "test.ndb").read_bytes())


@unittest.skipUnless(os.path.exists(clamdbed.CLAMD), "clamav-daemon is not installed")
class ClamdBedLifecycleTest(unittest.TestCase):
    def test_context_manager_stops_clamd_and_removes_its_dir(self):
        with clamdbed.ClamdBed() as bed:
            pid, workdir = bed.pid, bed.workdir
            self.assertTrue(bed.running)
            self.assertLess(bed.start_seconds, clamdbed.START_TIMEOUT)
        self.assertFalse(workdir.exists())
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)

    def test_given_dir_is_kept_and_a_second_bed_runs_beside(self):
        with tempfile.TemporaryDirectory(prefix="mxgate-clamdbed-test-") as tmp:
            first = clamdbed.ClamdBed(Path(tmp) / "one", max_stream=4096)
            second = clamdbed.ClamdBed(Path(tmp) / "two", max_stream=8192)
            with first, second:
                self.assertEqual(first.instream(b"x" * 4096), "stream: OK")
                self.assertEqual(first.instream(b"x" * 4097), "INSTREAM size limit exceeded. ERROR")
                self.assertEqual(second.instream(b"x" * 4097), "stream: OK")
            self.assertTrue((Path(tmp) / "one" / "clamd.conf").exists())
            self.assertFalse(first.running or second.running)

    def test_tcp(self):
        with clamdbed.ClamdBed(tcp=True) as bed:
            self.assertEqual(bed.tcp_endpoint, f"tcp:127.0.0.1:{bed.port}")
            self.assertTrue(bed.ping(tcp=True))
            self.assertEqual(bed.instream(clamdbed.eicar(), tcp=True),
                             "stream: " + clamdbed.EICAR_SIGNATURE + " FOUND")
            self.assertEqual(bed.instream(b"clean", tcp=True), "stream: OK")

    def test_stop_is_idempotent_and_quick(self):
        bed = clamdbed.ClamdBed().start()
        started = time.monotonic()
        bed.stop()
        bed.stop()
        self.assertLess(time.monotonic() - started, clamdbed.STOP_TIMEOUT)
        self.assertFalse(bed.running)
        bed.close()
        self.assertFalse(bed.workdir.exists())


if __name__ == "__main__":
    unittest.main()
