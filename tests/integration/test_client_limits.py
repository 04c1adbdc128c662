"""Per-client limits through the running gateway, with raw sockets: one IP
address outside relay_networks cannot hold more than its sessions or send
more than its messages per minute; relay clients are exempt."""

from __future__ import annotations

import unittest

from mxgate_harness import HOSTNAME, make_message, session, start_server


class ClientLimitsTest(unittest.TestCase):
    def test_concurrent_sessions_per_client(self):
        server = start_server(self, {"relay_networks": [], "accept_domains": ["example.test"],
                                     "limits": {"max_connections_per_client": 2}})
        first, second = session(server), session(server)
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        third = server.client()
        self.addCleanup(third.close)
        reply = third.read_reply()
        self.assertEqual(reply.code, 421)
        self.assertEqual(reply.lines[-1], f"4.7.0 {HOSTNAME} Error: too many connections from 127.0.0.1")
        self.assertTrue(third.wait_closed())
        server.wait_for_log(r"server: refused 127\.0\.0\.1: too many connections")
        # A session that ends frees its place.
        first.command("QUIT")
        first.wait_closed()
        server.wait_for_log(r"session end: client=127\.0\.0\.1:\d+ .*end=quit")
        fourth = session(server)
        self.addCleanup(fourth.close)

    def test_message_rate_per_client(self):
        server = start_server(self, {"relay_networks": [], "accept_domains": ["example.test"],
                                     "limits": {"max_message_rate_per_client": 2},
                                     "filter": {"enabled": False}})
        with session(server) as c:
            for i in range(2):
                reply = c.send_message("a@client.test", ["b@example.test"], make_message(f"m{i}"))
                self.assertEqual(reply.code, 250, str(reply))
            reply = c.command("MAIL FROM:<a@client.test>")
            self.assertEqual(reply.code, 450)
            self.assertEqual(reply.lines[-1], "4.7.1 Error: too much mail from 127.0.0.1")
            self.assertEqual(c.command("NOOP").code, 250)  # the session goes on

    def test_relay_clients_are_exempt(self):
        server = start_server(self, {"limits": {"max_connections_per_client": 1,
                                                "max_message_rate_per_client": 1},
                                     "filter": {"enabled": False}})
        clients = [session(server) for _ in range(3)]
        for c in clients:
            self.addCleanup(c.close)
        for i in range(3):
            reply = clients[0].send_message("a@client.test", ["b@example.test"], make_message(f"r{i}"))
            self.assertEqual(reply.code, 250, str(reply))


if __name__ == "__main__":
    unittest.main()
