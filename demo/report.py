"""What the demo judges and what it prints: a seeded pick of labelled images from a manifest,
the verdict table, and how many verdicts were right.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from train.data.records import read_manifest


def pick(manifest: Path, count: int, generators: str) -> dict[Path, str]:
    """A seeded pick of count/2 real and count/2 AI images: path -> "real" or "AI (<generator>)".

    The manifest is read as training reads one (train.data.records); rows whose file is missing
    are skipped, so a partly fetched image set still gives a pick."""
    keep = {g.strip() for g in generators.split(",") if g.strip()}
    samples = [s for s in read_manifest(manifest) if Path(s.path).is_file()]
    real = [s for s in samples if s.label == 0]
    fake = [s for s in samples if s.label == 1 and (not keep or s.generator in keep)]
    rng = np.random.default_rng(11)
    picked = []
    for group, n in ((real, count // 2), (fake, count - count // 2)):
        picked += [group[i] for i in rng.choice(len(group), size=min(n, len(group)), replace=False)]
    return {Path(s.path).resolve(): f"AI ({s.generator})" if s.label else "real" for s in picked}


def print_table(verdicts: list[dict], dead: list[dict], truth: dict[str, str],
           names: dict[str, str] | None = None) -> None:
    names = names or {}
    show = any(truth.values())
    print(f"\n{'id':<22} {'label':<13} {'score':>6}  {'reused':<13} {'latency ms':>10}"
          + (f"  {'truth':<28}" if show else "") + "  image")
    for v in sorted(verdicts, key=lambda v: v["id"]):
        line = (f"{v['id']:<22} {v['label']:<13} {v['score']:>6.3f}  {_reused(v):<13} "
                f"{v['latency_ms']:>10.1f}" + (f"  {truth.get(v['id'], ''):<28}" if show else "")
                + f"  {names.get(v['id'], '')}")
        print(line.rstrip())
    for d in dead:
        print(f"{d['id'] or '?':<22} dead letter: {d['error_kind']}: {d['error']}")
    cached = sum(bool(v.get("cached")) for v in verdicts)
    duplicates = sum(bool(v.get("duplicate_of")) for v in verdicts)
    print(f"\nsummary: judged {len(verdicts)}, of which from the cache {cached}, in-flight "
          f"duplicates {duplicates}; dead letters {len(dead)}")
    if show:
        print(score_line(verdicts, truth))


def _reused(verdict: dict) -> str:
    """How a verdict was reused: a cache hit (exact or near) or an identical image in flight."""
    if verdict.get("cached"):
        return f"cache, {verdict.get('cache') or 'hit'}"
    if verdict.get("duplicate_of"):
        return "in flight"
    return "-"


def score_line(verdicts: list[dict], truth: dict[str, str]) -> str:
    """How many verdicts match the truth, per class ("uncertain" counts as not right)."""
    right = {"real": [0, 0], "AI": [0, 0]}
    for v in verdicts:
        t = truth.get(v["id"], "")
        if not t:
            continue
        cls = "real" if t == "real" else "AI"
        right[cls][1] += 1
        right[cls][0] += v["label"] == ("real" if cls == "real" else "ai_generated")
    total = [sum(x) for x in zip(*right.values())]
    return (f"right: {total[0]} of {total[1]} distinct images (AI images called AI: "
            f"{right['AI'][0]} of {right['AI'][1]}; real photos called real: "
            f"{right['real'][0]} of {right['real'][1]})")
