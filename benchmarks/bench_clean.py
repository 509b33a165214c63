"""Cleaning throughput: bronze batch → silver + dead letters, against bare ``json.loads`` of the same records.

Run: ``python benchmarks/bench_clean.py`` (200k demo events, 1% bad records, best of 5 runs each); writes
``benchmarks/results/clean.json``. The events come from the demo stream generator, so sizes, cardinalities and
bad-record kinds are the ones ingest meets. The baseline is the least any Python cleaning must do: decode every
record once with the standard library (``[json.loads(v) for v in values]``), nothing else.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

from rt_training.clean import BRONZE_SCHEMA, JsonParser, clean_batch
from rt_training.spec import load_spec
from rt_training.stream.synthetic import EventGenerator


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bronze_batch(values: list[bytes], keys: list[bytes | None]) -> pa.Table:
    n = len(values)
    now = datetime.now(UTC).replace(microsecond=0)
    return pa.Table.from_pydict(
        {
            "topic": ["clickstream"] * n,
            "partition": [0] * n,
            "offset": list(range(n)),
            "timestamp": [now] * n,
            "key": keys,
            "value": values,
            "ingested_at": [now] * n,
            "run_id": ["bench"] * n,
        },
        schema=BRONZE_SCHEMA,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bad-ratio", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    spec = load_spec()
    batch = EventGenerator(spec, seed=11, bad_ratio=args.bad_ratio).generate(args.events)
    values = batch.values
    bronze = bronze_batch(values, batch.keys)
    n = len(values)
    print(
        f"{n} events, mean {sum(map(len, values)) / n:.0f} bytes, {sum(k is not None for k in batch.kinds)} bad"
    )

    def decode_json_loads() -> None:
        for v in values:
            try:  # noqa: SIM105 - contextlib.suppress would add a with-block per record to the baseline
                json.loads(v)
            except ValueError:
                pass

    # Without the field types the parser gives no loose-row hint, so every column holding a bad record's value
    # is classified value by value: the cost the hint saves.
    untyped_parser = JsonParser(list(spec.schema_.fields))
    stages = {
        "json_loads_baseline": decode_json_loads,
        "parse_only": lambda: untyped_parser.parse(bronze.column("value").combine_chunks()),
        "clean_batch": lambda: clean_batch(bronze, spec),
        "clean_batch_untyped_parser": lambda: clean_batch(bronze, spec, parser=untyped_parser),
    }
    # Round-robin, so every stage meets the same background load on this shared machine.
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(args.repeats):
        for name, fn in stages.items():
            times[name] += timed(fn, 1)
    for name, t in times.items():
        print(f"{name:22s} best {min(t):.3f} s  ({n / min(t):,.0f} events/s)")

    result = clean_batch(bronze, spec)
    assert result.rows_in == result.silver_rows + result.dead_letter_rows == n
    untyped = clean_batch(bronze, spec, parser=untyped_parser)
    assert untyped.silver.equals(result.silver) and untyped.dead_letters.equals(result.dead_letters)
    best = {name: min(t) for name, t in times.items()}
    payload = {
        "events": n,
        "mean_record_bytes": round(sum(map(len, values)) / n, 1),
        "bad_ratio": args.bad_ratio,
        "repeats": args.repeats,
        "seconds": {name: [round(x, 4) for x in t] for name, t in times.items()},
        "events_per_s": {name: round(n / b) for name, b in best.items()},
        "events_per_s_median": {name: round(n / statistics.median(t)) for name, t in times.items()},
        "ratio_clean_vs_json_loads": round(best["json_loads_baseline"] / best["clean_batch"], 3),
        "speedup_of_loose_row_hint": round(best["clean_batch_untyped_parser"] / best["clean_batch"], 3),
        "silver_rows": result.silver_rows,
        "dead_letter_rows": result.dead_letter_rows,
        "reason_counts": result.reason_counts,
        "target_events_per_s": 300_000,
    }
    path = write_result("clean", payload)
    print(f"clean_batch / json.loads throughput: {payload['ratio_clean_vs_json_loads']}x; wrote {path}")


if __name__ == "__main__":
    main()
