"""Figures and the report of bench/filter-eval: precision, recall and
false-positive rate at each threshold, per corpus group, ROC AUC, and the
throughput of each filter; written as Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from .corpus import CLASSES

# Operating points shown.  mxgate's spam score is the sum of its spam
# findings (the Bayes bucket of src/filter/bayes.hpp and the weighted rules
# of rules/spam.toml), read like SpamAssassin's: the same cuts.
MXGATE_THRESHOLDS = (3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
MXGATE_DEFAULT = 5.0
# mxgate's classifier probability alone (the BAYES_ finding's p=).
BAYES_P_THRESHOLDS = (0.5, 0.6, 0.8, 0.95, 0.99, 0.999)
SA_THRESHOLDS = (3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
SA_DEFAULT = 5.0


def confusion(rows: list[dict], key: str, threshold: float) -> dict:
    """Counts and rates for "spam when rows[i][key] >= threshold"."""
    tp = fp = fn = tn = 0
    by_class = {c: [0, 0] for c in CLASSES}  # flagged, total
    for r in rows:
        flagged = r[key] is not None and r[key] >= threshold
        by_class[r["class"]][0] += flagged
        by_class[r["class"]][1] += 1
        if r["spam"]:
            tp += flagged
            fn += not flagged
        else:
            fp += flagged
            tn += not flagged
    return {
        "threshold": threshold,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "fpr": fp / (fp + tn) if fp + tn else None,
        # Per group: the share flagged as spam (the FPR of a ham group, the recall of spam).
        "flagged": {c: {"flagged": f, "of": n, "rate": f / n if n else None} for c, (f, n) in by_class.items()},
    }


def auc(rows: list[dict], key: str) -> float | None:
    """ROC AUC of the score (Mann-Whitney U with ties counted half)."""
    pos = sorted(r[key] for r in rows if r["spam"] and r[key] is not None)
    neg = sorted(r[key] for r in rows if not r["spam"] and r[key] is not None)
    if not pos or not neg:
        return None
    wins, j, k = 0.0, 0, 0
    for p in pos:
        while j < len(neg) and neg[j] < p:
            j += 1
        k = j
        while k < len(neg) and neg[k] == p:
            k += 1
        wins += j + 0.5 * (k - j)
    return wins / (len(pos) * len(neg))


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f} %"


def num(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def rule_hits(rows: list[dict]) -> list[dict]:
    """How often each mxgate spam rule fired on spam and on ham (Bayes
    buckets and GTUBE aside), most spam hits first."""
    n_spam = sum(1 for r in rows if r["spam"])
    n_ham = len(rows) - n_spam
    counts: dict[str, list[int]] = {}
    for r in rows:
        for rule in r.get("mx_rules", []):
            if rule.startswith("BAYES_") or rule == "GTUBE":
                continue
            counts.setdefault(rule, [0, 0])[0 if r["spam"] else 1] += 1
    out = [{"rule": k, "spam": v[0], "ham": v[1], "spam_rate": v[0] / n_spam if n_spam else None,
            "ham_rate": v[1] / n_ham if n_ham else None} for k, v in counts.items()]
    return sorted(out, key=lambda h: (-h["spam"], h["ham"], h["rule"]))


def summarize(rows: list[dict], throughput: dict, learning: dict, sa_enabled: bool) -> dict:
    out = {
        "mxgate": {
            "auc": auc(rows, "mx_score"),
            "auc_bayes_p": auc(rows, "mx_p"),
            "thresholds": [confusion(rows, "mx_score", t) for t in MXGATE_THRESHOLDS],
            "bayes_p": [confusion(rows, "mx_p", t) for t in BAYES_P_THRESHOLDS],
            "default": confusion(rows, "mx_score", MXGATE_DEFAULT),
            "rule_hits": rule_hits(rows),
        },
        "throughput": throughput,
        "learning": learning,
    }
    if sa_enabled:
        out["spamassassin"] = {
            "auc": auc(rows, "sa_score"),
            "thresholds": [confusion(rows, "sa_score", t) for t in SA_THRESHOLDS],
            "default": confusion(rows, "sa_score", SA_DEFAULT),
        }
        mx, sa = out["mxgate"]["default"], out["spamassassin"]["default"]
        mx_rate = throughput["mxgate"]["messages_per_s"]
        sa_rate = throughput["spamassassin"]["messages_per_s"]
        out["goal"] = {
            "lower_fpr": mx["fpr"] < sa["fpr"],
            "recall_at_least": mx["recall"] >= sa["recall"],
            "speed_ratio": mx_rate / sa_rate if sa_rate else None,
            "speed_20x": bool(sa_rate) and mx_rate >= 20 * sa_rate,
        }
        out["goal"]["met"] = out["goal"]["lower_fpr"] and out["goal"]["recall_at_least"] and out["goal"]["speed_20x"]
    return out


def _point_rows(points: list[dict], label: str, default: float | None) -> list[str]:
    lines = []
    for p in points:
        mark = " (default)" if default is not None and p["threshold"] == default else ""
        f = p["flagged"]
        lines.append(f"| {label} ≥ {p['threshold']:g}{mark} | {pct(p['precision'])} | {pct(p['recall'])} | "
                     f"{pct(p['fpr'])} | {p['fp']} | {p['fn']} | {pct(f['easy ham']['rate'])} | "
                     f"{pct(f['hard ham']['rate'])} | {pct(f['spam']['rate'])} |")
    return lines


def markdown(meta: dict, s: dict) -> str:
    sa = "spamassassin" in s
    L = [f"# Spam filter evaluation: mxgate against SpamAssassin — {meta['date']}", ""]
    L += [f"- command: `{meta['command']}`",
          f"- machine: {meta['machine']['nproc']} cores, {meta['machine']['cpu_model']}, kernel "
          f"{meta['machine']['kernel']}; load average {meta['load_start']} at start, {meta['load_end']} at end",
          f"- mxgate: {meta['mxgate']} ({meta['mxgate_binary']}), commit {meta['commit']}; spam rules: "
          f"{meta.get('rules', 'built-in')}",
          f"- SpamAssassin: {meta.get('spamassassin', 'not run')}",
          f"- corpus: {meta['corpus']}",
          f"- split: seed {meta['seed']}, {meta['split']}",
          f"- Bayes minimums (both filters): {meta['min_learned']} spam and {meta['min_learned']} ham", ""]
    if meta.get("quick"):
        L += ["**Quick mode: a small subset; the figures mean nothing.**", ""]
    L += ["## At the default thresholds", "",
          "| | precision | recall | false-positive rate | false positives | missed spam | easy ham flagged | "
          "hard ham flagged | spam caught | ROC AUC | messages/s | CPU ms/message |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def default_row(name: str, d: dict, a: float | None, t: dict) -> str:
        f = d["flagged"]
        return (f"| {name} (≥ {d['threshold']:g}) | {pct(d['precision'])} | {pct(d['recall'])} | {pct(d['fpr'])} | "
                f"{d['fp']} of {d['fp'] + d['tn']} | {d['fn']} of {d['tp'] + d['fn']} | "
                f"{pct(f['easy ham']['rate'])} | {pct(f['hard ham']['rate'])} | {pct(f['spam']['rate'])} | "
                f"{num(a, 4)} | {num(t['messages_per_s'])} | {num(t['cpu_ms_per_message'], 2)} |")

    L.append(default_row("mxgate", s["mxgate"]["default"], s["mxgate"]["auc"], s["throughput"]["mxgate"]))
    if sa:
        L.append(default_row("SpamAssassin", s["spamassassin"]["default"], s["spamassassin"]["auc"],
                             s["throughput"]["spamassassin"]))
    L.append("")
    if sa:
        g = s["goal"]
        ratio = g["speed_ratio"]
        L += [f"Goal (lower false-positive rate at a recall at least as high, and at least 20× the messages "
              f"per second): **{'met' if g['met'] else 'not met'}** — lower FPR: {'yes' if g['lower_fpr'] else 'no'}, "
              f"recall at least SpamAssassin's: {'yes' if g['recall_at_least'] else 'no'}, speed "
              f"{'n/a' if ratio is None else f'{ratio:,.0f}×'}.", ""]
    L += ["## Every threshold", "",
          "Rates per group: the share of that group flagged as spam (for a ham group, its false-positive rate).", "",
          "| filter, threshold | precision | recall | FPR | FP | FN | easy ham flagged | hard ham flagged | "
          "spam caught |", "|---|---|---|---|---|---|---|---|---|"]
    L += _point_rows(s["mxgate"]["thresholds"], "mxgate spam score", MXGATE_DEFAULT)
    L += _point_rows(s["mxgate"]["bayes_p"], "mxgate Bayes p", None)
    if sa:
        L += _point_rows(s["spamassassin"]["thresholds"], "SpamAssassin score", SA_DEFAULT)
    L += ["", "## Throughput and learning", "",
          "Scoring: each filter on one core (`taskset -c 0`), every test message once. mxgate: one `mxgate check "
          "FILE... --json` process, start-up (configuration, Bayes snapshot) included. SpamAssassin: spamd with "
          "one child on core 0, spamc sending one message at a time from core 1, after one warm-up message; "
          "CPU is spamd's (parent and child).", "",
          "| | messages | wall s | messages/s | CPU s | CPU ms/message | learning wall s |",
          "|---|---|---|---|---|---|---|"]
    for name, key in (("mxgate", "mxgate"), ("SpamAssassin", "spamassassin")):
        t = s["throughput"].get(key)
        if t is None:
            continue
        L.append(f"| {name} | {t['messages']} | {num(t['wall_s'], 2)} | {num(t['messages_per_s'])} | "
                 f"{num(t['cpu_s'], 2)} | {num(t['cpu_ms_per_message'], 2)} | "
                 f"{num(s['learning'].get(key, {}).get('wall_s'), 1)} |")
    L += ["", "Learned: " + "; ".join(f"{k}: {v.get('spam')} spam, {v.get('ham')} ham"
                                      for k, v in s["learning"].items()), ""]
    hits = s["mxgate"].get("rule_hits", [])
    if hits:
        L += ["## mxgate's rules on these messages", "",
              "Each rule that fired (the weighted spam rules, and the phishing and impersonation rules): "
              "the share of spam and of ham it fired on. A spam rule scored 0 reports nothing.", "",
              "| rule | spam | ham |", "|---|---|---|"]
        L += [f"| {h['rule']} | {h['spam']} ({pct(h['spam_rate'], 1)}) | {h['ham']} ({pct(h['ham_rate'], 1)}) |"
              for h in hits]
        L.append("")
    return "\n".join(L)


def write(stem: Path, meta: dict, summary: dict, rows: list[dict]) -> tuple[Path, Path]:
    md, js = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".json")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(meta, summary))
    compact = [[r["id"], r["mx_score"], r["mx_p"], r.get("sa_score"), r.get("sa_bayes_p"), r.get("mx_rules", [])]
               for r in rows]
    js.write_text(json.dumps({"meta": meta, "summary": summary,
                              "messages_columns": ["id", "mxgate_spam_score", "mxgate_bayes_p",
                                                   "spamassassin_score", "spamassassin_bayes_p", "mxgate_rules"],
                              "messages": compact}, indent=1) + "\n")
    return md, js
