"""Evaluation reports: report.json, roc.png, robustness.png, report.md and a self-contained
report.html (the PNGs embedded as base64), all written into one folder."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402

from train.evaluate.scoring import ENSEMBLE, LEVELS  # noqa: E402

_COLUMNS = ("auc", "ap", "acc", "best_acc", "best_threshold", "n_real", "n_fake")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metric_rows(report: dict[str, Any]) -> list[tuple[str, dict]]:
    """(row label, metrics) for the ensemble, each expert, then the ensemble per generator."""
    rows = [(ENSEMBLE, report["overall"][ENSEMBLE])]
    rows += [(f"expert {n}", m) for n, m in report["overall"]["experts"].items()]
    rows += [(f"generator {g}", v[ENSEMBLE]) for g, v in report["per_generator"].items()]
    return rows


def robustness_rows(report: dict[str, Any]) -> list[tuple[str, dict]]:
    return [(f"{r['family']}/{r['level']}", r[ENSEMBLE]) for r in report["robustness"]]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sections(doc: dict[str, Any]) -> list[tuple[str, Sequence[str], list[list[Any]]]]:
    """(title, header, rows) of every table in the report."""
    out = []
    if doc.get("loo"):
        header = ["held-out generator", "model version", "auc", "ap", "acc", "best_acc",
                  "n_fake", "n_real"]
        rows = [[r[k] for k in ("generator", "bundle", "auc", "ap", "acc", "best_acc", "n_fake",
                                "n_real")] for r in doc["loo"]]
        rows.append(["mean", "", doc.get("loo_mean_auc"), None, None, None, None, None])
        out.append(("Leave-generators-out", header, rows))
    for b in doc["bundles"]:
        title = f"{b['bundle']} (version {b['model_version']}, threshold {b['threshold']:.4f})"
        out.append((f"Clean: {title}", ["", *_COLUMNS],
                    [[label, *[m.get(k) for k in _COLUMNS]] for label, m in metric_rows(b)]))
        if b.get("per_source"):  # reports written before it have none
            out.append((f"Called fake at the threshold, by source: {title}",
                        ["source", "class", "n", "flagged", "median score"],
                        [[r["source"], r["class"], r["n"], r["flagged"], r["median"]]
                         for r in b["per_source"]]))
        if b["robustness"]:
            out.append((f"Robustness (ensemble): {title}", ["condition", *_COLUMNS],
                        [[label, *[m.get(k) for k in _COLUMNS]] for label, m in robustness_rows(b)]))
    return out


def plot_roc(doc: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for b in doc["bundles"]:
        for name, curve in b["roc"].items():
            if len(doc["bundles"]) > 1 and name != ENSEMBLE:
                continue  # several bundles: one curve each, their ensemble's
            label = name if len(doc["bundles"]) == 1 else b["model_version"]
            auc = (b["overall"][ENSEMBLE] if name == ENSEMBLE else b["overall"]["experts"][name])["auc"]
            ax.plot(curve["fpr"], curve["tpr"], lw=2 if name == ENSEMBLE else 1,
                    label=f"{label} (AUC {_fmt(auc)})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false-positive rate (reals called fake)", ylabel="true-positive rate",
           title="ROC, clean images", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_robustness(doc: dict[str, Any], path: Path) -> Path:
    """Ensemble AUC per family from clean to severe (mean over bundles when there are several)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    clean = [b["overall"][ENSEMBLE]["auc"] for b in doc["bundles"]]
    clean_auc = _mean(clean)
    by_family: dict[str, dict[str, list]] = {}
    for b in doc["bundles"]:
        for r in b["robustness"]:
            by_family.setdefault(r["family"], {}).setdefault(r["level"], []).append(r[ENSEMBLE]["auc"])
    xs = ["clean", *LEVELS]
    for family, levels in sorted(by_family.items()):
        ys = [clean_auc] + [_mean(levels.get(lv, [])) for lv in LEVELS]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=family)
    ax.set(ylabel="ROC AUC (ensemble)", title="Robustness: AUC by degradation family and level")
    ax.set_ylim(0.0, 1.02)
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_reports(out_dir: str | Path, doc: dict[str, Any]) -> dict[str, Path]:
    """Write every report file; returns their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "roc": out / "roc.png", "md": out / "report.md",
             "html": out / "report.html"}
    paths["json"].write_text(json.dumps(doc, indent=2))
    plot_roc(doc, paths["roc"])
    if any(b["robustness"] for b in doc["bundles"]):
        paths["robustness"] = plot_robustness(doc, out / "robustness.png")
    sections = _sections(doc)
    # A TTA report must not pass for a plain one: its title says so.
    title = f"Evaluation: {doc['data']}" + (f" (TTA {doc['tta']} views)" if doc.get("tta", 1) > 1 else "")
    md = [f"# {title}", ""]
    for title, header, rows in sections:
        md += [f"## {title}", "", _md_table(header, rows), ""]
    md += ["![ROC](roc.png)", ""]
    if "robustness" in paths:
        md += ["![robustness](robustness.png)", ""]
    paths["md"].write_text("\n".join(md))
    body = [f"<h1>{html.escape(title)}</h1>"]
    for title, header, rows in sections:
        body += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
    body += [_png_tag(paths["roc"], "ROC curves")]
    if "robustness" in paths:
        body += [_png_tag(paths["robustness"], "robustness chart")]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:48%}")
    head = f"<meta charset='utf-8'><title>featdistill eval</title><style>{style}</style>"
    paths["html"].write_text(f"<!doctype html><html><head>{head}</head>"
                             f"<body>{''.join(body)}</body></html>")
    return paths
