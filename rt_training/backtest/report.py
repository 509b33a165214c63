"""The backtest's report: the summary arithmetic, ``backtest.json``, and one plot of the three metric curves.

The plot is a self-contained HTML page with an inline SVG (no plotting library is a dependency of the project):
the champion's prequential metric, the static and the periodic baselines per step, with the steps where dataset
drift was detected and where a retrained candidate was promoted marked.

Examples
--------
>>> rows = [
...     {"step": 1, "rows": 10, "dead_letters": 0, "late_rows": 0, "champion_metric": None,
...      "static_metric": None, "periodic_metric": None, "retraining": True, "trigger": "first champion",
...      "gate": "promoted", "drift": None, "start": "2020-01-01T00:00:00+00:00"},
...     {"step": 2, "rows": 10, "dead_letters": 1, "late_rows": 2, "champion_metric": 0.8,
...      "static_metric": 0.8, "periodic_metric": 0.7, "retraining": True, "trigger": "drift",
...      "gate": "promoted", "drift": True, "start": "2020-01-02T00:00:00+00:00"},
...     {"step": 3, "rows": 10, "dead_letters": 0, "late_rows": 0, "champion_metric": 0.9,
...      "static_metric": 0.6, "periodic_metric": 0.8, "retraining": False, "trigger": None,
...      "gate": None, "drift": False, "start": "2020-01-03T00:00:00+00:00"},
... ]
>>> s = summarize(rows, "auc", wall_s=3.0)
>>> s["steps"], s["events"], s["retrainings"], s["promotions"], s["first_champion_step"]
(3, 30, 1, 1, 1)
>>> round(s["prequential_mean"], 3), round(s["static_mean"], 3), round(s["periodic_mean"], 3)
(0.85, 0.7, 0.75)
"""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rt_training.spec.models import PipelineSpec

JSON_NAME = "backtest.json"
PLOT_NAME = "backtest.html"
PHASES = ("ingest_s", "score_s", "drift_s", "sampling_s", "training_s", "periodic_s")
"""Seconds of a step spent producing and ingesting its records, scoring the three models, on the drift report,
updating the training set, training and gating the champion's candidate, and training the periodic baseline."""
CURVES = (
    ("champion_metric", "continual (champion)", "#1f77b4"),
    ("static_metric", "static", "#7f7f7f"),
    ("periodic_metric", "periodic", "#ff7f0e"),
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def _means(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    return {
        "prequential_mean": _mean([r["champion_metric"] for r in rows]),
        "static_mean": _mean([r["static_metric"] for r in rows]),
        "periodic_mean": _mean([r["periodic_metric"] for r in rows]),
    }


def _all_three(row: dict[str, Any]) -> bool:
    return all(row[k] is not None for k in ("champion_metric", "static_metric", "periodic_metric"))


def summarize(
    rows: list[dict[str, Any]], metric: str, *, wall_s: float, drift_at_s: float | None = None
) -> dict[str, Any]:
    """The summary of step rows: means of each model's metric over the steps it was scored on, the same over
    the steps where all three were, counts of events, dead letters, late rows, retrainings and promotions.

    ``retrainings`` counts trainings launched by the trigger (drift or a quality drop), not the first champion;
    ``promotions`` counts the retrained candidates the gate promoted. ``seconds_by_phase`` adds up each step's
    :data:`PHASES`. With ``drift_at_s``, ``after_drift`` gives the means over the steps that start at or after it.
    """
    events = sum(r["rows"] for r in rows)
    retrained = [r for r in rows if r["retraining"] and r.get("trigger") != "first champion"]
    first = next(
        (r["step"] for r in rows if r.get("trigger") == "first champion" and r["gate"] == "promoted"), None
    )
    common = [r for r in rows if _all_three(r)]
    summary: dict[str, Any] = {
        "steps": len(rows),
        "metric": metric,
        **_means(rows),
        "retrainings": len(retrained),
        "promotions": sum(1 for r in retrained if r["gate"] == "promoted"),
        "first_champion_step": first,
        "drift_steps": [r["step"] for r in rows if r.get("drift")],
        "retraining_steps": [r["step"] for r in retrained],
        "events": events,
        "events_per_s": events / wall_s if wall_s > 0 else None,
        "dead_letters": sum(r["dead_letters"] for r in rows),
        "late_rows": sum(r["late_rows"] for r in rows),
        "wall_s": wall_s,
        "seconds_by_phase": {p: round(sum(r.get(p, 0.0) for r in rows), 3) for p in PHASES},
        "common_steps": len(common),
        "common": _means(common),
    }
    if drift_at_s is not None:
        after = [
            r
            for r in rows
            if r.get("start") is not None and datetime.fromisoformat(r["start"]).timestamp() >= drift_at_s
        ]
        summary["drift_at"] = datetime.fromtimestamp(drift_at_s, UTC).isoformat()
        summary["after_drift"] = {"steps": [r["step"] for r in after], **_means(after)}
    return summary


def write_report(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any], spec: PipelineSpec) -> Path:
    """``out/backtest.json``: the pipeline, the summary and one row per step."""
    path = out / JSON_NAME
    document = {"pipeline": spec.name, "summary": summary, "steps": rows}
    path.write_text(json.dumps(document, indent=2, default=str))
    return path


def write_plot(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """``out/backtest.html``: the three metric curves over the steps, drift and promotions marked."""
    path = out / PLOT_NAME
    path.write_text(plot_html(rows, summary))
    return path


def plot_html(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The page: a title, the SVG, and a legend of the marks."""
    width, height, left, right, top, bottom = 900, 420, 60, 45, 20, 60
    values = [r[k] for r in rows for k, _, _ in CURVES if r[k] is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    n = max(len(rows), 2)

    def x(i: int) -> float:
        return left + (width - left - right) * i / (n - 1)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (high - v) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">']
    parts.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
        'fill="none" stroke="#ccc"/>'
    )
    for k in range(5):
        v = low + (high - low) * k / 4
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
        )
    starts = [datetime.fromisoformat(r["start"]) for r in rows if r.get("start")]
    short = len(starts) > 1 and (max(starts) - min(starts)).days < 2
    for i, r in enumerate(rows):
        start = datetime.fromisoformat(r["start"]) if r.get("start") else None
        label = "" if start is None else start.strftime("%m-%d %H:%M" if short else "%Y-%m-%d")
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - bottom + 16}" text-anchor="middle">{r["step"]}</text>'
        )
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - bottom + 30}" text-anchor="middle" fill="#666">{label}</text>'
        )
        if r.get("drift"):
            parts.append(
                f'<rect x="{x(i) - 6:.1f}" y="{top}" width="12" height="{height - top - bottom}" '
                'fill="#d62728" fill-opacity="0.12"><title>dataset drift</title></rect>'
            )
        if r.get("gate") == "promoted":
            parts.append(
                f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{height - bottom}" '
                'stroke="#2ca02c" stroke-dasharray="4 3"><title>promotion after this step</title></line>'
            )
    for key, name, color in CURVES:
        points = [(x(i), y(r[key])) for i, r in enumerate(rows) if r[key] is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for px, py in points:
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"><title>{name}</title></circle>'
            )
    parts.append(
        f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">step (start of its event time)</text>'
    )
    parts.append("</svg>")
    legend = " ".join(f'<span style="color:{color}">&#9632; {name}</span>' for _, name, color in CURVES)
    title = (
        f"{summary['metric']} per step: prequential {_fmt(summary['prequential_mean'])}, "
        f"static {_fmt(summary['static_mean'])}, periodic {_fmt(summary['periodic_mean'])}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>backtest</title></head>"
        f"<body style='font-family:sans-serif'><h3>{html.escape(title)}</h3>{''.join(parts)}"
        f"<p>{legend} <span style='color:#d62728'>&#9632; dataset drift</span> "
        "<span style='color:#2ca02c'>- - promotion</span></p></body></html>"
    )
