"""Drift decision time: rt_training's detector against Evidently's own DataDriftPreset report, same data, same run.

    python benchmarks/bench_drift.py                  # 100,000 rows per window
    python benchmarks/bench_drift.py --rows 20000     # quicker

Two datasets, each a reference and a current window of ``--rows`` rows (seeded):

* numeric: 20 columns (normal, log-normal, float32, integer, with missing values), 6 of them drifted;
* categorical: 5 columns (2, 4, 12, 60 and 500 distinct values), 3 of them drifted (a dataset drift).

Both sides get the same pandas DataFrames. Ours: :func:`rt_training.drift.detect_drift`, median of ``--repeats``
runs (also timed on pyarrow Tables). Evidently: ``Report([DataDriftPreset()]).run(...)``, one run after a warm-up
on 1,000 rows (so its one-off lazy imports are not counted; its ~seconds-long ``import evidently`` is reported
apart). Every column's verdict, test and score are compared. Result: ``benchmarks/results/drift.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from _common import write_result

from rt_training.drift import detect_drift
from rt_training.drift.detector import DriftResult
from rt_training.drift.report import EvidentlyVerdicts, run_evidently, verdicts_from_snapshot

TARGET_SECONDS = 2.0


def numeric_windows(rows: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """20 numeric columns; columns 0, 3, 6, 9, 12, 15 drift (shift or scale), the rest are stationary."""

    def column(kind: int, n: int, drift: float) -> np.ndarray:
        if kind == 0:
            return rng.normal(drift, 1.0, n)
        if kind == 1:
            return rng.lognormal(1.0 + drift, 0.6, n)
        if kind == 2:
            return rng.normal(5.0, 2.0 * (1 + drift), n).astype(np.float32)
        if kind == 3:
            return rng.integers(0, int(1000 * (1 + drift)), n)
        values = rng.gamma(2.0, 3.0 + 3.0 * drift, n)
        values[rng.random(n) < 0.05] = np.nan
        return values

    names = [f"n{i:02d}" for i in range(20)]
    reference = pd.DataFrame({name: column(i % 5, rows, 0.0) for i, name in enumerate(names)})
    current = pd.DataFrame(
        {name: column(i % 5, rows, 0.25 if i % 3 == 0 and i < 18 else 0.0) for i, name in enumerate(names)}
    )
    return reference, current, names


def categorical_windows(rows: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """5 categorical columns of 2, 4, 12, 60 and 500 values; the 4-, 60- and 500-value columns drift."""
    cardinalities = [2, 4, 12, 60, 500]
    names = [f"c{i}" for i in range(len(cardinalities))]

    def column(k: int, n: int, drift: bool) -> np.ndarray:
        weights = np.linspace(1.0, 2.0, k)
        if drift:
            weights = weights[::-1] ** 2
        values = np.array([f"v{j:03d}" for j in range(k)], dtype=object)
        return rng.choice(values, n, p=weights / weights.sum())

    reference = pd.DataFrame(
        {name: column(k, rows, False) for name, k in zip(names, cardinalities, strict=True)}
    )
    current = pd.DataFrame(
        {name: column(k, rows, k in (4, 60, 500)) for name, k in zip(names, cardinalities, strict=True)}
    )
    return reference, current, names


def compare(ours: DriftResult, theirs: EvidentlyVerdicts) -> dict[str, Any]:
    """Per-column agreement: verdict, test, and the largest relative score difference."""
    mismatches = []
    max_rel = 0.0
    for col in ours.columns:
        ev = theirs.columns[col.column]
        if col.drifted != ev.drifted or col.stattest_display_name != ev.stattest:
            mismatches.append(
                {
                    "column": col.column,
                    "ours": (col.stattest, col.drifted),
                    "evidently": (ev.stattest, ev.drifted),
                }
            )
        if ev.score != 0:
            max_rel = max(max_rel, abs(col.score - ev.score) / abs(ev.score))
    return {
        "verdicts_match": not mismatches and ours.dataset_drift == theirs.dataset_drift,
        "mismatches": mismatches,
        "max_relative_score_difference": max_rel,
        "drifted_columns": ours.drifted_columns,
        "evidently_drifted_columns": [name for name, d in theirs.drifted.items() if d],
        "dataset_drift": ours.dataset_drift,
        "evidently_dataset_drift": theirs.dataset_drift,
        "stattests": sorted({c.stattest for c in ours.columns}),
    }


def run_dataset(
    name: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    repeats: int,
) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ours = detect_drift(reference, current, numeric, categorical)
        times.append(time.perf_counter() - start)
    ref_arrow, cur_arrow = pa.Table.from_pandas(reference), pa.Table.from_pandas(current)
    arrow_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detect_drift(ref_arrow, cur_arrow, numeric, categorical)
        arrow_times.append(time.perf_counter() - start)

    warm = slice(0, 1000)
    run_evidently(reference.iloc[warm], current.iloc[warm], numeric, categorical)
    start = time.perf_counter()
    snapshot = run_evidently(reference, current, numeric, categorical)
    evidently_seconds = time.perf_counter() - start
    theirs = verdicts_from_snapshot(snapshot)

    seconds = statistics.median(times)
    result = {
        "rows": len(reference),
        "columns": len(numeric) + len(categorical),
        "seconds": seconds,
        "seconds_runs": times,
        "seconds_arrow": statistics.median(arrow_times),
        "evidently_seconds": evidently_seconds,
        "speedup": evidently_seconds / seconds,
        **compare(ours, theirs),
    }
    print(
        f"{name:12s} {result['rows']:>7,} rows x {result['columns']:>2} columns: ours {seconds:.3f} s "
        f"(arrow {result['seconds_arrow']:.3f} s), Evidently {evidently_seconds:.2f} s, "
        f"x{result['speedup']:.0f}, verdicts match: {result['verdicts_match']}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows per window (default 100,000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of our detector (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]  # the CPUs may be shared: read the timings with this in mind
    rng = np.random.default_rng(args.seed)
    ref_num, cur_num, numeric = numeric_windows(args.rows, rng)
    ref_cat, cur_cat, categorical = categorical_windows(args.rows, rng)

    start = time.perf_counter()
    import evidently  # timed: the report path pays this once per process

    import_seconds = time.perf_counter() - start
    datasets = {
        "numeric": run_dataset("numeric", ref_num, cur_num, numeric, [], args.repeats),
        "categorical": run_dataset("categorical", ref_cat, cur_cat, [], categorical, args.repeats),
    }
    seconds = sum(d["seconds"] for d in datasets.values())
    evidently_seconds = sum(d["evidently_seconds"] for d in datasets.values())
    payload = {
        "rows": args.rows,
        "columns": sum(d["columns"] for d in datasets.values()),
        "seconds": seconds,
        "evidently_seconds": evidently_seconds,
        "speedup": evidently_seconds / seconds,
        "verdicts_match": all(d["verdicts_match"] for d in datasets.values()),
        "target_seconds": TARGET_SECONDS,
        "meets_target": all(d["seconds"] <= TARGET_SECONDS for d in datasets.values()),
        "evidently_import_seconds": import_seconds,
        "load_average_1m_at_start": load_at_start,
        "evidently_version": evidently.__version__,
        "seed": args.seed,
        "datasets": datasets,
    }
    path = write_result("drift", payload)
    print(
        f"overall: ours {seconds:.3f} s, Evidently {evidently_seconds:.2f} s (import {import_seconds:.1f} s apart), "
        f"x{payload['speedup']:.0f}, all verdicts match: {payload['verdicts_match']} -> {path}"
    )


if __name__ == "__main__":
    main()
