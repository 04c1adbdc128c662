"""The command line: --version, check-config, and serve refusing bad configs."""

import re
import socket
import subprocess
import tempfile
import unittest
from pathlib import Path

import mxgate_harness as h

CONFIG_ERROR = re.compile(r"^config error: (?P<key>[^:]+): (?P<message>.+)$")


class ConfigDir:
    """A temp dir holding certs and a config built from the harness defaults."""

    def __init__(self, testcase: unittest.TestCase):
        self.server = h.MxgateServer()  # used only for its work dir and config rendering
        testcase.addCleanup(self.server.close)
        self.dir = self.server.workdir

    def write(self, overrides: dict | None = None, extra: str = "", raw: str | None = None) -> Path:
        self.server.overrides = overrides or {}
        self.server.raw_config = raw
        self.server.write_config()
        if extra:
            text = self.server.config_path.read_text()
            self.server.config_path.write_text(text + extra)
        return self.server.config_path


def check_config(path: Path, cwd: str = "/") -> subprocess.CompletedProcess:
    return h.run([str(h.BINARY), "check-config", "--config", str(path)], timeout=30, cwd=cwd)


class VersionTest(unittest.TestCase):
    def test_version(self):
        r = h.run([str(h.BINARY), "--version"], timeout=30)
        self.assertEqual(r.returncode, 0, r)
        out = (r.stdout + r.stderr).decode()
        self.assertRegex(out, r"\d+\.\d+\.\d+")
        self.assertIn("mxgate", out.lower())


class CheckConfigTest(unittest.TestCase):
    def setUp(self):
        self.cfg = ConfigDir(self)

    def assert_ok(self, path: Path):
        r = check_config(path)
        self.assertEqual(r.returncode, 0, f"stdout={r.stdout!r} stderr={r.stderr!r}\n{path.read_text()}")
        self.assertEqual(r.stdout.decode().strip(), "ok")

    def assert_config_error(self, path: Path, key_part: str) -> str:
        """check-config exits 1 with one line 'config error: KEY: message', KEY naming key_part."""
        r = check_config(path)
        stderr = r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 1, f"stdout={r.stdout!r} stderr={stderr!r}\n{path.read_text()}")
        lines = [l for l in stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, f"expected one line on stderr, got {stderr!r}")
        m = CONFIG_ERROR.match(lines[0])
        self.assertTrue(m, f"not 'config error: KEY: message': {lines[0]!r}")
        self.assertIn(key_part, m.group("key"), f"error does not name {key_part!r}: {lines[0]!r}")
        self.assertNotIn(b"ok", r.stdout)
        return lines[0]

    def test_default_config_ok(self):
        self.assert_ok(self.cfg.write())

    def test_full_config_ok(self):
        self.assert_ok(self.cfg.write({
            "limits": {"max_message_size": 36700160, "max_recipients": 1000, "max_command_line": 2048,
                       "max_errors": 10, "max_connections": 1000},
            "timeouts": {"command": 300, "data": 300, "tls_handshake": 60, "shutdown": 30},
            "listener": [{"tls": "may"}, {"tls": "none"}, {"tls": "encrypt"}, {"tls": "implicit"}],
        }))

    def test_relative_paths_resolve_against_config_dir(self):
        # The harness config uses certs/ecdsa.pem etc.; check-config runs from another cwd.
        path = self.cfg.write()
        r = check_config(path, cwd=tempfile.gettempdir())
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_ipv6_listener_ok(self):
        self.assert_ok(self.cfg.write({"listener": [{"address": "[::1]:2525"}]}))

    def test_unknown_top_level_key(self):
        self.assert_config_error(self.cfg.write({"bogus_key": 1}), "bogus_key")

    def test_unknown_key_in_table(self):
        self.assert_config_error(self.cfg.write({"limits": {"max_bogus": 3}}), "max_bogus")

    def test_unknown_key_in_listener(self):
        self.assert_config_error(self.cfg.write({"listener": [{"bogus_opt": "x"}]}), "bogus_opt")

    def test_bad_tls_value(self):
        self.assert_config_error(self.cfg.write({"listener": [{"tls": "sometimes"}]}), "tls")

    def test_bad_tls_value_second_listener(self):
        line = self.assert_config_error(
            self.cfg.write({"listener": [{"tls": "may"}, {"tls": "optional"}]}), "tls")
        self.assertIn("1", CONFIG_ERROR.match(line).group("key"), f"key should name the second listener: {line}")

    def test_missing_cert_file(self):
        path = self.cfg.write({"tls": {"certificates": [
            {"cert": "certs/missing.pem", "key": "certs/ecdsa.key"}]}})
        self.assert_config_error(path, "cert")

    def test_missing_key_file(self):
        path = self.cfg.write({"tls": {"certificates": [
            {"cert": "certs/ecdsa.pem", "key": "certs/missing.key"}]}})
        self.assert_config_error(path, "key")

    def test_bad_min_version(self):
        self.assert_config_error(self.cfg.write({"tls": {"min_version": "SSLv3"}}), "min_version")

    def test_bad_address_no_port(self):
        self.assert_config_error(self.cfg.write({"listener": [{"address": "127.0.0.1"}]}), "address")

    def test_bad_address_port_out_of_range(self):
        self.assert_config_error(self.cfg.write({"listener": [{"address": "127.0.0.1:70000"}]}), "address")

    def test_bad_address_port_not_a_number(self):
        self.assert_config_error(self.cfg.write({"listener": [{"address": "127.0.0.1:smtp"}]}), "address")

    def test_bad_address_unclosed_bracket(self):
        self.assert_config_error(self.cfg.write({"listener": [{"address": "[::1:2525"}]}), "address")

    def test_wrong_type(self):
        self.assert_config_error(self.cfg.write({"limits": {"max_recipients": "many"}}), "max_recipients")

    def test_toml_syntax_error(self):
        path = self.cfg.write(extra="\nthis is not toml = = =\n")
        r = check_config(path)
        self.assertEqual(r.returncode, 1, r)
        lines = [l for l in r.stderr.decode().splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("config error: "), lines[0])

    def test_missing_config_file(self):
        r = check_config(self.cfg.dir / "does-not-exist.toml")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"config error: ", r.stderr)


class ServeRefusesBadConfigTest(unittest.TestCase):
    """serve must exit non-zero (promptly, without listening) on a bad config."""

    def setUp(self):
        self.cfg = ConfigDir(self)

    def assert_serve_refuses(self, path: Path, expect_config_error: bool = True):
        try:
            r = h.run([str(h.BINARY), "serve", "--config", str(path)], timeout=20, cwd="/")
        except subprocess.TimeoutExpired:
            self.fail(f"serve kept running on a bad config:\n{path.read_text()}")
        self.assertNotEqual(r.returncode, 0, f"serve exited 0; stderr={r.stderr!r}")
        if expect_config_error:
            self.assertIn(b"config error: ", r.stderr)

    def test_unknown_key(self):
        self.assert_serve_refuses(self.cfg.write({"bogus_key": True}))

    def test_bad_tls_value(self):
        self.assert_serve_refuses(self.cfg.write({"listener": [{"tls": "sometimes"}]}))

    def test_missing_cert_file(self):
        self.assert_serve_refuses(self.cfg.write({"tls": {"certificates": [
            {"cert": "certs/missing.pem", "key": "certs/ecdsa.key"}]}}))

    def test_bad_address(self):
        self.assert_serve_refuses(self.cfg.write({"listener": [{"address": "127.0.0.1"}]}))

    def test_cert_and_key_do_not_match(self):
        self.assert_serve_refuses(self.cfg.write({"tls": {"certificates": [
            {"cert": "certs/ecdsa.pem", "key": "certs/rsa.key"}]}}), expect_config_error=False)

    def test_port_in_use(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            self.assert_serve_refuses(self.cfg.write({"listener": [{"port": port}]}),
                                      expect_config_error=False)


if __name__ == "__main__":
    unittest.main()
