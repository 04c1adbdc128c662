"""A private SpamAssassin for bench/filter-eval: Debian's spamassassin,
spamd and spamc (installed with apt-get when missing), a site configuration
of its own (the Debian plugin .pre files and a local.cf written here), its
Bayes database in the work dir, trained with sa-learn on the same messages
as mxgate, and spamd -L (local tests only: no DNS, no network checks; mxgate
makes none in this evaluation either) with one child pinned to the
measured core.  spamc sends one message at a time from the other core.

No autolearning (bayes_auto_learn 0): the test part must not train either
filter.  Rules: whatever `spamassassin` loads by default (Debian ships the
4.0 rule set in /usr/share/spamassassin; sa-update needs the network and is
not run).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import procs
from .procs import BenchError

PACKAGES = ("spamassassin", "spamd", "spamc")
_SCORE = re.compile(r"^(-?[0-9.]+)/(-?[0-9.]+)\s*$")
_BAYES = re.compile(r"\b(BAYES_\d+)\b")
_BAYES_P = re.compile(r"BAYES_\d+\s+BODY: Bayes spam probability is[^\[]*\[score:\s*([0-9.]+)\]", re.S)


def ensure_installed(log) -> None:
    if all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in ("spamassassin", "sa-learn", "spamd", "spamc")):
        return
    if os.geteuid() != 0:
        raise BenchError("SpamAssassin is missing and this is not root: apt-get install " + " ".join(PACKAGES))
    log("installing " + " ".join(PACKAGES) + " (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        out = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")


def version() -> str:
    out = subprocess.run(["spamassassin", "-V"], capture_output=True, text=True, timeout=120)
    return " ".join(out.stdout.split("\n")[0].split()[2:3]) or "unknown"


def _spamd() -> str:
    return shutil.which("spamd") or "/usr/sbin/spamd"


class SpamAssassin:
    def __init__(self, workdir: Path, min_learned: int):
        self.dir = workdir / "spamassassin"
        self.site = self.dir / "site"
        self.bayes = self.dir / "bayes"
        self.home = self.dir / "home"
        for d in (self.site, self.bayes, self.home):
            d.mkdir(parents=True)
        # Plugin loading as Debian configures it; no other site .cf.
        for pre in Path("/etc/spamassassin").glob("*.pre"):
            shutil.copy(pre, self.site / pre.name)
        (self.site / "local.cf").write_text(f"""\
# Written by bench/filter-eval.
required_score 5.0
report_safe 0
use_bayes 1
bayes_auto_learn 0
bayes_auto_expire 0
bayes_learn_to_journal 0
bayes_path {self.bayes}/bayes
bayes_file_mode 0666
bayes_min_spam_num {min_learned}
bayes_min_ham_num {min_learned}
dns_available no
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
""")
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = self.dir / "spamd.log"

    def _run(self, argv: list[str], timeout: float = 3600) -> str:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, HOME=str(self.home)))
        if out.returncode != 0:
            raise BenchError(f"{argv[0]} failed (exit {out.returncode}): {out.stderr[-2000:]}")
        return out.stdout

    def learn(self, spam: bool, files: list[Path], core: int | None, chunk: int = 500) -> None:
        for i in range(0, len(files), chunk):
            self._run(procs.pinned(["sa-learn", "--siteconfigpath", str(self.site), "-L", "--no-sync",
                                    "--spam" if spam else "--ham", *map(str, files[i:i + chunk])], core))

    def sync(self) -> dict:
        """Folds the learning into the database; returns nspam, nham, ntokens."""
        self._run(["sa-learn", "--siteconfigpath", str(self.site), "--sync"])
        out = self._run(["sa-learn", "--siteconfigpath", str(self.site), "--dump", "magic"])
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            # "0.000          0       1510          0  non-token data: nspam"
            if len(parts) >= 5 and parts[-1] in ("nspam", "nham", "ntokens"):
                counts[parts[-1]] = int(parts[2])
        return counts

    def start(self, core: int, timeout: float = 120.0) -> None:
        self.port = procs.free_port()
        argv = [_spamd(), "-L", "--siteconfigpath", str(self.site), "-x", "--max-children", "1",
                "--min-children", "1", "--min-spare", "1", "--max-spare", "1", "--listen",
                f"127.0.0.1:{self.port}", "--helper-home-dir", str(self.home), "-s", str(self.log)]
        if os.geteuid() == 0:
            # spamd will not scan as root; its child runs as nobody, which
            # must reach the Bayes files.
            argv += ["-u", "nobody"]
            for d in (self.dir, self.bayes, self.home):
                d.chmod(0o777)
            parent = self.dir.parent
            parent.chmod(parent.stat().st_mode | 0o711)
            for f in self.bayes.iterdir():
                f.chmod(0o666)
        self.proc = procs.spawn(argv, core, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                env=dict(os.environ, HOME=str(self.home)))
        ready = procs.wait_until(lambda: self.proc.poll() is not None or
                                 "child states: I" in procs.tail(self.log), timeout, 0.2)
        if not ready or self.proc.poll() is not None:
            raise BenchError(f"spamd did not start: {procs.tail(self.log)}")

    def check(self, path: Path, core: int | None) -> dict:
        """One message through spamc -R: score, and the Bayes rule and probability it hit."""
        with open(path, "rb") as f:
            out = subprocess.run(procs.pinned(["spamc", "-d", "127.0.0.1", "-p", str(self.port), "-x", "-R",
                                               "-s", "67108864"], core),
                                 stdin=f, capture_output=True, timeout=600)
        text = out.stdout.decode("utf-8", "replace")
        first = text.split("\n", 1)[0]
        m = _SCORE.match(first)
        if m is None:
            raise BenchError(f"spamc on {path}: exit {out.returncode}, {first!r} {out.stderr[-500:]!r}")
        bayes = _BAYES.findall(text)
        p = _BAYES_P.search(text)
        return {"score": float(m.group(1)), "bayes_rule": max(bayes) if bayes else None,
                "bayes_p": float(p.group(1)) if p else None}

    def cpu_seconds(self) -> float:
        return procs.tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        roots, sessions = [self.proc.pid], {self.proc.pid}
        procs.terminate(self.proc, timeout=15)
        procs.kill_remaining(roots, sessions)
        self.proc = None
        time.sleep(0.1)
