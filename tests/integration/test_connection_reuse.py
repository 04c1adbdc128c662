"""Outbound connection reuse (src/delivery/smtp_client.cpp ConnectionCache):
a sending mxgate A relays example.test to a receiving mxgate B on
smtp:[127.0.0.1]:P with tls "encrypt".

  * five messages one after the other travel over fewer sessions than
    messages (B logs "session end: ... messages=N" with N > 1), each is
    delivered exactly once;
  * B is killed and restarted while A holds a parked connection to it: the
    next message is still delivered, on a new connection, without a
    deferral.

Every wait is bounded; both servers are stopped in cleanup.
"""

from __future__ import annotations

import re
import time
import unittest

import mxgate_harness as h
import relay_helpers as rh

WAIT = 20.0
SESSION_END = re.compile(r"session end: client=\S+ helo=(?P<helo>\S+) tls=\S+ messages=(?P<n>\d+)")


class ConnectionReuseTest(unittest.TestCase):
    def setUp(self):
        self.port = h.free_port()
        self.receiver = rh.LoopbackMxgate({"hostname": "mx.receiver.test",
                                           "listener": [{"host": "127.0.0.1", "port": self.port, "tls": "may"}]})
        self.addCleanup(self.receiver.close)
        self.receiver.start()
        self.sender = rh.LoopbackMxgate({
            "listener": [{"host": "127.0.0.1", "tls": "none"}],
            "delivery": {"maildir": "mail"},
            "queue": {"retry_initial": 60, "retry_max": 120},
            "accept_domains": ["example.test"],
            "route": [{"domain": "example.test", "next_hop": f"smtp:[127.0.0.1]:{self.port}",
                       "tls": "encrypt"}],
        })
        self.addCleanup(self.sender.close)
        self.sender.start()

    def submit(self, n: int) -> str:
        content = h.make_message(subject=f"reuse {n}", message_id=f"<reuse-{n}@sender.test>")
        return self.sender.submit("alice@sender.test", ["bob@example.test"], content)

    def wait_maildir(self, count: int) -> list:
        deadline = time.monotonic() + WAIT
        while len(self.receiver.maildir_files()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} messages at the receiver; sender log:\n"
                                     f"{self.sender.log_text()[-4000:]}")
            time.sleep(0.05)
        return self.receiver.maildir_files()

    def sender_sessions(self) -> list[int]:
        """messages=N of every receiver session opened by the sender (EHLO name h.HOSTNAME)."""
        return [int(m["n"]) for m in SESSION_END.finditer(self.receiver.log_text()) if m["helo"] == h.HOSTNAME]

    def assert_each_once(self, count: int):
        time.sleep(0.5)  # nothing more arrives
        files = self.receiver.maildir_files()
        self.assertEqual(len(files), count)
        ids = sorted(re.search(rb"(?im)^Message-ID: (<[^>]+>)", f.read_bytes()).group(1) for f in files)
        self.assertEqual(ids, sorted(f"<reuse-{n}@sender.test>".encode() for n in range(count)))

    def test_five_messages_share_a_connection(self):
        for n in range(5):
            self.submit(n)
            self.wait_maildir(n + 1)
        self.assertEqual(self.sender.stop(), 0)  # closes the parked connection with QUIT
        self.assert_each_once(5)
        sessions = self.sender_sessions()
        self.assertEqual(sum(sessions), 5, sessions)
        self.assertLess(len(sessions), 5, sessions)
        self.assertGreater(max(sessions), 1, sessions)
        self.assertNotIn("status=deferred", self.sender.log_text())
        self.assertIn("end=quit", self.receiver.log_text())

    def test_dead_cached_connection_falls_back_to_a_new_one(self):
        self.submit(0)
        self.wait_maildir(1)
        # B goes away while A holds the parked connection; B comes back on the same port.
        self.receiver.kill()
        self.receiver.start()
        self.submit(1)
        self.wait_maildir(2)
        log = self.sender.log_text()
        self.assertIn("cached connection unusable", log)
        self.assertNotIn("status=deferred", log)
        self.assertEqual(self.sender.stop(), 0)
        self.assert_each_once(2)


if __name__ == "__main__":
    unittest.main()
