"""Privilege drop: started as root with user = "nobody", mxgate binds first
(a privileged port too), then runs as nobody and still delivers mail."""

import os
import pwd
import socket
import unittest
from pathlib import Path

import mxgate_harness as h
from mxgate_harness import queue_id, session


def privileged_free_port() -> int | None:
    for port in range(700, 1000):
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                return port
        except OSError:
            continue
    return None


def proc_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups of every thread of PID, from /proc."""
    result: dict[str, list[int]] = {}
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                result.setdefault(key, []).extend(int(v) for v in value.split())
    return result


@unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0, "needs root")
class PrivilegeDropTest(unittest.TestCase):
    def setUp(self):
        try:
            self.nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user nobody")

    def make_server(self, port=None) -> h.MxgateServer:
        listener = {"port": port} if port else {}
        server = h.MxgateServer({"user": "nobody", "listener": [listener]})
        self.addCleanup(server.close)
        # The work dir must be reachable by nobody; spool and maildir belong to nobody.
        os.chmod(server.workdir, 0o755)
        for sub in ("spool", "mail"):
            path = server.workdir / sub
            path.mkdir(mode=0o700)
            os.chown(path, self.nobody.pw_uid, self.nobody.pw_gid)
        server.start()
        return server

    def assert_runs_as_nobody(self, server: h.MxgateServer):
        ids = proc_ids(server.pid)
        self.assertTrue(ids, "no /proc status")
        self.assertEqual(set(ids["Uid"]), {self.nobody.pw_uid}, f"Uid (real, effective, saved, fs): {ids}")
        self.assertEqual(set(ids["Gid"]), {self.nobody.pw_gid}, f"Gid: {ids}")
        self.assertTrue(set(ids.get("Groups", [])) <= {self.nobody.pw_gid},
                        f"supplementary groups of root kept: {ids.get('Groups')}")

    def deliver_one(self, server: h.MxgateServer):
        with session(server) as c:
            queue_id(c.send_message("a@example.test", ["b@example.test"], h.make_message()))
        msgs = server.wait_for_messages(1)
        self.assertEqual(msgs[0].path.stat().st_uid, self.nobody.pw_uid)
        server.wait_spool_empty()

    def test_runs_as_nobody_and_delivers(self):
        server = self.make_server()
        self.assert_runs_as_nobody(server)
        self.deliver_one(server)

    def test_starttls_after_drop(self):
        server = self.make_server()
        with session(server) as c:
            self.assertEqual(c.starttls().code, 220)
            self.assertEqual(c.ehlo().code, 250)
            queue_id(c.send_message("a@example.test", ["b@example.test"], h.make_message()))
        server.wait_for_messages(1)

    def test_privileged_port_then_drop(self):
        port = privileged_free_port()
        if port is None:
            self.skipTest("no free port below 1024")
        server = self.make_server(port)
        self.assertEqual(server.port, port)
        self.assert_runs_as_nobody(server)
        self.deliver_one(server)


if __name__ == "__main__":
    unittest.main()
