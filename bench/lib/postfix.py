"""A private Postfix instance as the benchmark's peer.

The recipe is the one tests/integration/relay_helpers.py (PostfixServer) uses
for its end-to-end tests: its own config_directory, queue_directory and
data_directory in a temp dir, `postfix -c DIR start-fg` (master stays our
descendant, nothing is handed to init), maillog_file because there is no
syslog, `postfix -c DIR stop`, then SIGKILL by pid for whatever is left.
Here the instance relays everything to the sink instead of delivering to a
Maildir, and the limits that would throttle a benchmark are lifted.  Its
queue is Postfix's normal durable queue (cleanup fsyncs before the 250).

TLS: the same ECDSA and RSA certificates as mxgate, and mxgate's default
policy read from src/config/config.hpp (TLS 1.2 cipher list, key exchange
groups, TLSv1.2 minimum) with the server's preference (tls_preempt_cipherlist).
Postfix 3.7 has no setting for TLS 1.3 suites; OpenSSL's default list is the
same three suites in the same order as mxgate's default, which
tls_policy_from_source() checks.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from . import procs
from .procs import BenchError

NAME = "postfix"

# master.cf of relay_helpers.PostfixServer, the smtpd line on our address.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

OPENSSL_DEFAULT_TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

# Postfix's names for OpenSSL's groups (tls_eecdh_auto_curves)
GROUP_NAMES = {"P-256": "prime256v1", "P-384": "secp384r1", "P-521": "secp521r1"}


def available() -> str | None:
    """None when a private Postfix can run here, else why not."""
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    if not shutil.which("postfix") or not Path("/usr/lib/postfix/sbin/master").exists():
        return "the Debian package postfix is not installed (scripts/setup installs it)"
    for user in ("postfix", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"missing account {user}"
    return None


def version() -> str:
    out = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def tls_policy_from_source(config_hpp: Path) -> dict[str, str]:
    """mxgate's default min_version, ciphers, ciphersuites and groups, read from
    the struct Tls initialisers in src/config/config.hpp (string literals
    concatenated), so the Postfix side follows whatever mxgate's defaults are."""
    text = config_hpp.read_text()
    struct = re.search(r"struct Tls \{(.*?)\n\};", text, re.S)
    if not struct:
        raise BenchError(f"{config_hpp}: struct Tls not found (cannot copy mxgate's TLS defaults)")
    policy = {}
    for key in ("min_version", "ciphers", "ciphersuites", "groups"):
        m = re.search(rf"std::string {key}\s*=\s*((?:\s*\"[^\"]*\")+)\s*;", struct.group(1))
        if not m:
            raise BenchError(f"{config_hpp}: default of Tls::{key} not found")
        policy[key] = "".join(re.findall(r"\"([^\"]*)\"", m.group(1)))
    if policy["ciphersuites"] != OPENSSL_DEFAULT_TLS13_SUITES:
        raise BenchError("mxgate's default TLS 1.3 suites differ from OpenSSL's default, which is all "
                         f"Postfix 3.7 can use: {policy['ciphersuites']}; update bench/lib/postfix.py")
    return policy


class Postfix:
    name = NAME

    def __init__(self, workdir: Path, certs: Path, sink_port: int, core: int, tls_policy: dict[str, str],
                 process_limit: int):
        self.core = core
        self.dir = workdir / "postfix"
        self.conf, self.queue, self.data = self.dir / "conf", self.dir / "queue", self.dir / "data"
        self.log = self.dir / "maillog"
        self.port = procs.free_port()
        self.proc: subprocess.Popen | None = None
        self.master_pid: int | None = None
        for d in (self.dir, self.conf, self.queue, self.data):
            d.mkdir()
        os.chmod(self.dir, 0o755)  # the daemons run as user postfix
        os.chown(self.data, pwd.getpwnam("postfix").pw_uid, -1)
        for name in ("ecdsa", "rsa"):  # read by smtpd as root before it drops privileges
            for ext in ("pem", "key"):
                shutil.copy2(certs / f"{name}.{ext}", self.conf / f"{name}.{ext}")
        min_version = tls_policy["min_version"]
        protocols = ">=" + min_version
        curves = " ".join(GROUP_NAMES.get(g, g) for g in tls_policy["groups"].split(":"))
        self.main_cf = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.test",
            "mydomain": "bench.test",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "maillog_file_prefixes": self.dir,
            "maillog_file": self.log,
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            # Inbound TLS: same certificates and policy as mxgate.
            "smtpd_tls_security_level": "may",
            "smtpd_tls_eccert_file": self.conf / "ecdsa.pem",
            "smtpd_tls_eckey_file": self.conf / "ecdsa.key",
            "smtpd_tls_cert_file": self.conf / "rsa.pem",
            "smtpd_tls_key_file": self.conf / "rsa.key",
            "tls_preempt_cipherlist": "yes",
            "tls_high_cipherlist": tls_policy["ciphers"],
            "smtpd_tls_ciphers": "high",
            "smtpd_tls_mandatory_ciphers": "high",
            "smtpd_tls_protocols": protocols,
            "smtpd_tls_mandatory_protocols": protocols,
            "tls_eecdh_auto_curves": curves,
            # Outbound to the sink: opportunistic TLS, like mxgate's route.
            "smtp_tls_security_level": "may",
            # Limits that would throttle a benchmark (anvil's per-client limits,
            # the process limit for 5,000 idle sessions) and the message size.
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "smtpd_client_recipient_rate_limit": "0",
            "smtpd_client_new_tls_session_rate_limit": "0",
            "smtpd_client_auth_rate_limit": "0",
            "default_process_limit": str(process_limit),
            "smtpd_recipient_limit": "1000",
            "message_size_limit": "36700160",
            # Scenario e: Postfix needs minutes to fork 5,000 smtpd on a busy
            # core; the first idle sessions must outlive the set-up of the
            # last (mxgate gets the same timeouts.command).
            "smtpd_timeout": "3600s",
        }
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in self.main_cf.items()))
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))

    def _postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["postfix", "-c", str(self.conf), *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, timeout: float = 30.0) -> "Postfix":
        with open(self.dir / "start-fg.out", "wb") as out:
            # Every process of the instance inherits the pinning from here.
            self.proc = procs.spawn(["postfix", "-c", str(self.conf), "start-fg"], core=self.core,
                                    stdout=out, stderr=subprocess.STDOUT)
        if not procs.wait_until(lambda: self.proc.poll() is not None or procs.greets(self.port),
                                timeout, 0.1) or self.proc.poll() is not None:
            raise BenchError(f"postfix did not greet on 127.0.0.1:{self.port}\n{self.log_tail()}")
        if not procs.wait_until(lambda: self._read_master_pid() is not None, 10):
            raise BenchError(f"postfix wrote no master.pid\n{self.log_tail()}")
        self.master_pid = self._read_master_pid()
        return self

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def pid(self) -> int:
        assert self.master_pid is not None
        return self.master_pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """master (with the time of every daemon it reaped) plus its live daemons."""
        return procs.tree_cpu_seconds(self.pid)

    def memory(self) -> procs.Memory:
        return procs.tree_memory(self.pid)

    def queued(self) -> int:
        """Queue files not yet delivered (incoming, active, deferred, hold, maildrop)."""
        count = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(self.queue / sub):
                count += len(files)
        return count

    def log_tail(self) -> str:
        return procs.tail(self.dir / "start-fg.out", 1500) + procs.tail(self.log)

    def stop(self) -> None:
        """postfix stop; then SIGKILL whatever is left of master and its
        daemons (by pid: descendants of what we started, and members of its
        sessions)."""
        if self.proc is None:
            return
        master = self.master_pid or self._read_master_pid()
        try:
            self._postfix("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        roots = [self.proc.pid] + ([master] if master else [])
        sessions = set(roots)
        if not procs.wait_until(lambda: self.proc.poll() is not None, 15, 0.05):
            procs.kill_remaining(roots, sessions)
        procs.terminate(self.proc, timeout=5)
        # Daemons that outlive master (they exit on their own when master's
        # status pipe closes, but never trust that).
        procs.wait_until(lambda: not _members(roots, sessions), 10, 0.05)
        procs.kill_remaining(roots, sessions)
        self.proc = None


def _members(roots: list[int], sessions: set[int]) -> list[int]:
    table = procs.scan()
    out = set()
    for root in roots:
        out.update(p for p in procs.tree(root, table) if table[p].state != "Z")
    out.update(p for p, s in table.items() if s.session in sessions and s.state != "Z")
    return sorted(out)
