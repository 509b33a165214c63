"""Backtest: a year of realistic history replayed through the pipeline, continual training against two baselines.

    python benchmarks/bench_backtest.py                      # 300,000 events, 12 monthly steps
    python benchmarks/bench_backtest.py --events 30000       # quicker (or BENCH_BACKTEST_EVENTS=30000)
    KAFKA_BOOTSTRAP_SERVERS=host:9092 python benchmarks/bench_backtest.py   # an existing cluster

The history is :mod:`rt_training.stream.historical` (seed ``--seed``): 2021's product views of a web shop with
daily and weekly seasonality, a price rise and site redesign on 2021-06-14 (concept drift), a new category from
2021-08-26, slowly trending categories, 2.5% late events, null discounts and about 0.2% bad records. It is written
to a JSONL file in arrival order and replayed by :func:`rt_training.backtest.runner.run_backtest` with the spec
``rt_training/specs/retail_history.yaml`` in 12 steps of a twelfth of the year each, through a local Kafka broker
the backtest starts (or ``$KAFKA_BOOTSTRAP_SERVERS``). Each step is scored with the champion in force before it
(prequential), the first champion never updated (static) and a model retrained from scratch after every step on
the last ``--periodic-window-steps`` steps (periodic).

Targets: ``prequential_mean`` (the mean over steps of the prequential AUC) above both ``static_mean`` and
``periodic_mean``; the margins are reported. ``events_per_s`` is the records of the file over the wall time of the
whole ``run_backtest`` call (broker start, ingest, scoring, drift reports, every training). Result:
``benchmarks/results/backtest.json`` (summary, per-step rows, targets and margins, the stream's known times).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

from rt_training.backtest.runner import BacktestConfig, run_backtest
from rt_training.spec import load_spec
from rt_training.stream.historical import HistoricalStream, write_jsonl

SPEC_PATH = Path(__file__).resolve().parents[1] / "rt_training" / "specs" / "retail_history.yaml"
STEPS = 12
SUMMARY_FIELDS = (
    "steps",
    "metric",
    "prequential_mean",
    "static_mean",
    "periodic_mean",
    "retrainings",
    "promotions",
    "first_champion_step",
    "drift_steps",
    "retraining_steps",
    "events",
    "dead_letters",
    "late_rows",
    "wall_s",
    "common_steps",
    "common",
    "drift_at",
    "after_drift",
)


def say(message: str) -> None:
    print(f"bench-backtest: {message}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events",
        type=int,
        default=int(os.environ.get("BENCH_BACKTEST_EVENTS", "300000")),
        help="records in the history (default: $BENCH_BACKTEST_EVENTS or 300000)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the history (default 7)")
    parser.add_argument(
        "--periodic-window-steps", type=int, default=2, help="periodic baseline window (default 2)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and scoring")
    return parser.parse_args()


def margins(summary: dict[str, Any]) -> dict[str, Any]:
    """The targets as booleans and the margins of the prequential mean over each baseline (None if unscored)."""
    pre, static, periodic = (summary.get(k) for k in ("prequential_mean", "static_mean", "periodic_mean"))
    over_static = None if pre is None or static is None else pre - static
    over_periodic = None if pre is None or periodic is None else pre - periodic
    return {
        "targets": {
            "prequential_mean > static_mean": over_static is not None and over_static > 0,
            "prequential_mean > periodic_mean": over_periodic is not None and over_periodic > 0,
        },
        "margins": {"over_static": over_static, "over_periodic": over_periodic},
    }


def main() -> None:
    args = parse_args()
    spec = load_spec(SPEC_PATH)
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        started = time.perf_counter()
        stream = HistoricalStream(args.events, args.seed)
        events_path = Path(tmp) / "retail_history.jsonl"
        records = write_jsonl(events_path, stream.records())
        generate_s = time.perf_counter() - started
        say(
            f"wrote {records:,} records ({events_path.stat().st_size / 1e6:.1f} MB) in {generate_s:.1f}s: "
            f"{int(stream.late.sum()):,} late, {int((stream.bad != '').sum()):,} bad; shift at "
            f"{stream.shift_time:%Y-%m-%d}, new category from {stream.new_category_time:%Y-%m-%d}"
        )
        step_s = (stream.end - stream.start).total_seconds() / STEPS
        config = BacktestConfig(
            events=events_path,
            step_s=step_s,
            out_dir=Path(tmp) / "out",
            periodic_window_steps=args.periodic_window_steps,
            drift_at_s=stream.shift_time.timestamp(),
            threads=args.threads,
        )
        started = time.perf_counter()
        result = run_backtest(spec, config, progress=say)
        replay_s = time.perf_counter() - started

    summary = {k: result.summary[k] for k in SUMMARY_FIELDS if k in result.summary}
    checks = margins(summary)
    payload = {
        "spec": "rt_training/specs/retail_history.yaml",
        "history": {
            "records": records,
            "seed": args.seed,
            "start": stream.start.isoformat(),
            "end": stream.end.isoformat(),
            "level_shift_at": stream.shift_time.isoformat(),
            "new_category": stream.effects.new_category,
            "new_category_at": stream.new_category_time.isoformat(),
            "late_events": int(stream.late.sum()),
            "bad_records": int((stream.bad != "").sum()),
            "generate_s": round(generate_s, 2),
        },
        "step_s": step_s,
        "periodic_window_steps": args.periodic_window_steps,
        "summary": summary,
        "events_per_s": records / replay_s,
        "replay_wall_s": round(replay_s, 1),
        **checks,
        "steps": result.steps,
    }
    path = write_result("backtest", payload)
    say(
        f"{summary.get('metric')} prequential {summary.get('prequential_mean')}, static {summary.get('static_mean')}, "
        f"periodic {summary.get('periodic_mean')}; {records / replay_s:.0f} events/s over {replay_s:.0f}s; "
        f"targets {checks['targets']}; wrote {path}"
    )


if __name__ == "__main__":
    main()
