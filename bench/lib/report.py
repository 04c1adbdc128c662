"""Min/median/max over repeats, ratios mxgate/Postfix, and the two result
files: Markdown (for people, and the README) and JSON (everything measured)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

SERVERS = ("mxgate", "postfix")
LABEL = {"mxgate": "mxgate", "postfix": "Postfix"}

# Per kind of scenario: (key in a run's result, label, shown in the lead table)
METRICS = {
    "load": [
        ("cpu_ms_per_msg", "server CPU ms/msg", True),
        ("accepted_per_s", "msg/s accepted", False),
        ("delivered_per_s", "msg/s delivered", False),
        ("latency_ms_p50", "latency p50 ms", False),
        ("latency_ms_p99", "latency p99 ms", False),
    ],
    "handshake": [
        ("cpu_ms_per_handshake", "server CPU ms/handshake", True),
        ("handshakes_per_cpu_s", "handshakes per CPU-second", False),
        ("openssl_ms_per_handshake", "OpenSSL alone, in memory: server CPU ms/handshake", False),
        ("vs_openssl_percent", "% of OpenSSL alone (in-memory handshake)", False),
        ("s_server_ms_per_handshake", "OpenSSL's own server over TCP (s_server): CPU ms/handshake", False),
        ("vs_s_server_percent", "% of OpenSSL's own server (s_server)", False),
        ("vs_openssl_speed_percent", "% of `openssl speed` bound", False),
        ("sessions_per_s", "handshakes/s (wall)", False),
        ("handshake_ms_p50", "session setup p50 ms", False),
        ("handshake_ms_p99", "session setup p99 ms", False),
    ],
    "idle": [
        ("pss_kib_per_conn", "PSS KiB per connection", True),
        ("rss_kib_per_conn", "RSS KiB per connection", False),
    ],
}


def fmt(x) -> str:
    if x is None:
        return "–"
    x = float(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def spread(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def summarize(scenario, runs: dict[str, list[dict]]) -> dict:
    """{"figures": {metric: {server: spread}}, "ratio": {metric: mxgate median / Postfix median}}."""
    figures, ratio = {}, {}
    for key, _, _ in METRICS[scenario.kind]:
        figures[key] = {server: spread([r.get(key) for r in runs.get(server, [])]) for server in SERVERS}
        mx, pf = figures[key]["mxgate"], figures[key]["postfix"]
        ratio[key] = round(mx["median"] / pf["median"], 3) if mx and pf and pf["median"] else None
    return {"figures": figures, "ratio": ratio}


def _triple(s: dict | None) -> str:
    if not s:
        return "–"
    if s["n"] == 1:
        return fmt(s["median"])
    return f"{fmt(s['min'])} / **{fmt(s['median'])}** / {fmt(s['max'])}"


def _negotiated(runs: dict[str, list[dict]]) -> str:
    """What TLS the generator negotiated with each server, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384 EC-256"."""
    parts = []
    for server in SERVERS:
        seen = set()
        for r in runs.get(server, []):
            for field in ("tls_versions", "tls_ciphers", "tls_server_keys"):
                seen.update((field, k) for k in (r.get(field) or {}))
        if seen:
            text = " ".join(k for f in ("tls_versions", "tls_ciphers", "tls_server_keys")
                            for (ff, k) in sorted(seen) if ff == f)
            parts.append(f"{LABEL[server]}: {text}")
    return "; ".join(parts)


def markdown(meta: dict, results: list[dict]) -> str:
    m = meta
    n = m["repeats"]
    lines = [
        f"# mxgate vs Postfix, {m['date']}",
        "",
        f"Command: `{m['command']}` ({'quick sizes: a smoke run, not a measurement' if m['quick'] else 'full sizes'}), "
        f"{m['wall_s'] / 60:.1f} minutes in all ({m['build_s'] / 60:.1f} of them setup and build).",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_mib']:,} MiB, Linux {m['kernel']}; "
        f"load average {m['loadavg_start']} at the start, {m['loadavg_end']} at the end.",
        f"- Software: mxgate {m['mxgate_commit']} (release build), Postfix {m['postfix']}, {m['openssl']}.",
        f"- Each server on core {m['server_core']}, generator and sink on core {m['generator_core']}; "
        f"{n} repeat{'s' if n != 1 else ''}, the servers' order alternating between repeats; "
        "figures are min / **median** / max over the repeats, the ratio is of the medians.",
        f"- OpenSSL alone on core {m['server_core']}, measured just before every run of f: a whole TLS 1.3 server "
        "handshake in memory with mxgate's server context (bench/tools/tlshandshake), and OpenSSL's own server "
        "(`openssl s_server`, mxgate's TLS policy) taking full handshakes over loopback TCP from `openssl s_time "
        "-new`. The primitives' bound from `openssl speed`: ECDSA P-256 sign "
        f"{fmt(m['openssl_speed']['ecdsa_p256_sign_per_s'])}/s, "
        f"X25519 {fmt(m['openssl_speed']['x25519_per_s'])}/s: "
        f"{fmt(m['openssl_speed']['handshakes_per_cpu_s'])} handshakes per CPU-second "
        f"({m['openssl_speed']['ms_per_handshake']:.3f} ms each; see bench/README.md).",
        f"- Both servers: the same ECDSA P-256 and RSA 2048 certificates, {m['tls_policy']['min_version']} or later, "
        f"groups {m['tls_policy']['groups']}, mxgate's default cipher lists, server preference; both relay "
        "every message to one sink over opportunistic STARTTLS and keep a durable queue.",
        "- Ratio mxgate/Postfix: below 1 is better for mxgate in CPU, latency and memory, above 1 in rates.",
        "",
        "## Server CPU per unit of work (median)",
        "",
        "| scenario | unit | mxgate | Postfix | mxgate/Postfix |",
        "|---|---|--:|--:|--:|",
    ]
    for res in results:
        s = res["scenario"]
        for key, label, lead in METRICS[s.kind]:
            if not lead:
                continue
            f = res["summary"]["figures"][key]
            med = {srv: (f[srv]["median"] if f[srv] else None) for srv in SERVERS}
            lines.append(f"| {s.key}: {s.title} | {label} | {fmt(med['mxgate'])} | {fmt(med['postfix'])} | "
                         f"{fmt(res['summary']['ratio'][key])} |")
    lines += [
        "",
        f"## All figures (min / **median** / max of {n})",
        "",
        "| scenario | figure | mxgate | Postfix | mxgate/Postfix |",
        "|---|---|--:|--:|--:|",
    ]
    for res in results:
        s = res["scenario"]
        runs = len(res["runs"]["mxgate"])
        name = f"**{s.key}**: {s.title}" + (f" ({runs} run{'s' if runs != 1 else ''})" if runs != n else "")
        first = True
        for key, label, _ in METRICS[s.kind]:
            f = res["summary"]["figures"][key]
            lines.append(f"| {name if first else ''} | {label} | {_triple(f['mxgate'])} | "
                         f"{_triple(f['postfix'])} | {fmt(res['summary']['ratio'][key])} |")
            first = False
    lines += ["", "## Scenarios", ""]
    for res in results:
        s = res["scenario"]
        line = f"- **{s.key}**: {s.describe()}."
        tls = _negotiated(res["runs"])
        if tls:
            line += f" Negotiated: {tls}."
        lines.append(line)
    if any(r["runs"].get(srv) and any(x.get("duplicates_at_sink") for x in r["runs"][srv])
           for r in results for srv in SERVERS):
        lines += ["", "Note: the sink received more messages than were accepted in some runs "
                      "(duplicates_at_sink in the JSON file)."]
    lines.append("")
    return "\n".join(lines)


def to_json(meta: dict, results: list[dict]) -> str:
    out = {"meta": meta, "scenarios": []}
    for res in results:
        s = res["scenario"]
        out["scenarios"].append({
            "key": s.key, "title": s.title, "kind": s.kind, "description": s.describe(),
            "parameters": {k: getattr(s, k) for k in ("tls", "sessions", "messages", "total", "size", "idle", "hold")},
            "summary": res["summary"],
            "runs": res["runs"],
        })
    return json.dumps(out, indent=1, sort_keys=False) + "\n"


def write(stem: Path, meta: dict, results: list[dict]) -> tuple[Path, Path]:
    md, js = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".json")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(meta, results))
    js.write_text(to_json(meta, results))
    return md, js


def dated_stem(directory: Path, date: str) -> Path:
    """directory/DATE, or DATE-2, DATE-3... when a result of that name exists."""
    stem, n = directory / date, 1
    while stem.with_name(stem.name + ".md").exists() or stem.with_name(stem.name + ".json").exists():
        n += 1
        stem = directory / f"{date}-{n}"
    return stem
