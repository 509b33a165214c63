"""Reservoir throughput: weighted A-Res over a 10M-event stream in batches, against numpy baselines, same run.

    python benchmarks/bench_sampling.py                       # 10,000,000 events, batches of 100,000
    python benchmarks/bench_sampling.py --events 1000000      # quicker

The stream (int64 ids, event times over one day, gamma-distributed weights; seeded) is generated before any
timing. Measured, each as the median of ``--repeats`` runs with a fresh sampler:

* ``weighted``: :class:`rt_training.sampling.WeightedReservoir` (capacity ``--capacity``), batch by batch;
* ``time_biased`` and ``uniform`` (Algorithm L) on the same batches, for comparison;
* baseline ``keys``: numpy alone drawing the same keys batch by batch (``log(w) - log(E)``, E exponential):
  the floor any key-based reservoir pays, so ``weighted / keys`` says what the reservoir adds;
* baseline ``offline_topk``: the same keys for the whole stream at once plus one ``np.argpartition`` top-k,
  which needs every event in memory; the streaming sample must equal its result member for member (the
  keys come from the same seeded draws), and the JSON records that check.

Result: ``benchmarks/results/sampling.json`` (events/s of each, the ratios, and the check).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from _common import write_result

from rt_training.sampling import TimeBiasedReservoir, UniformReservoir, WeightedReservoir
from rt_training.sampling.base import Reservoir

TARGET_EVENTS_PER_S = 5_000_000


def stream(events: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.arange(events, dtype=np.int64)
    times = 1.7e9 + np.sort(rng.uniform(0.0, 86_400.0, events))
    weights = rng.gamma(2.0, 1.0, events)
    return ids, times, weights


def run_sampler(make: Callable[[], Reservoir], ids, times, weights, batch: int) -> tuple[float, Reservoir]:
    sampler = make()
    start = time.perf_counter()
    for lo in range(0, ids.size, batch):
        sampler.update(ids[lo : lo + batch], times[lo : lo + batch], weights[lo : lo + batch])
    return time.perf_counter() - start, sampler


def batch_keys(weights: np.ndarray, batch: int, seed: int) -> float:
    rng = np.random.Generator(np.random.PCG64(seed))
    start = time.perf_counter()
    for lo in range(0, weights.size, batch):
        w = weights[lo : lo + batch]
        _ = np.log(w) - np.log(rng.standard_exponential(w.size))
    return time.perf_counter() - start


def offline_topk(weights: np.ndarray, capacity: int, seed: int) -> tuple[float, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    start = time.perf_counter()
    exponentials = np.maximum(rng.standard_exponential(weights.size), np.finfo(np.float64).tiny)
    keys = np.log(weights) - np.log(exponentials)
    top = np.argpartition(keys, keys.size - capacity)[keys.size - capacity :]
    return time.perf_counter() - start, top


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--capacity", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ids, times, weights = stream(args.events, args.seed)
    print(f"stream: {args.events:,} events, batches of {args.batch:,}, capacity {args.capacity:,}")

    samplers: dict[str, Callable[[], Reservoir]] = {
        "weighted": lambda: WeightedReservoir(args.capacity, seed=args.seed),
        "time_biased": lambda: TimeBiasedReservoir(
            args.capacity, half_life_s=3600.0, seed=args.seed, reference_time=1.7e9
        ),
        "uniform": lambda: UniformReservoir(args.capacity, seed=args.seed),
    }
    seconds: dict[str, float] = {}
    finals: dict[str, Reservoir] = {}
    for name, make in samplers.items():
        runs = [run_sampler(make, ids, times, weights, args.batch) for _ in range(args.repeats)]
        seconds[name] = statistics.median(s for s, _ in runs)
        finals[name] = runs[-1][1]
        print(f"{name:>12}: {seconds[name]:.3f} s  {args.events / seconds[name] / 1e6:8.2f} M events/s")

    keys_s = median_of(args.repeats, lambda: batch_keys(weights, args.batch, args.seed))
    print(f"{'numpy keys':>12}: {keys_s:.3f} s  {args.events / keys_s / 1e6:8.2f} M events/s")
    offline = [offline_topk(weights, args.capacity, args.seed) for _ in range(args.repeats)]
    offline_s = statistics.median(s for s, _ in offline)
    print(f"{'offline top-k':>12}: {offline_s:.3f} s  {args.events / offline_s / 1e6:8.2f} M events/s")

    same = bool(np.array_equal(np.sort(finals["weighted"].members), np.sort(ids[offline[-1][1]])))
    print(f"streaming sample == offline top-k of the same keys: {same}")
    events_per_s = args.events / seconds["weighted"]
    path = write_result(
        "sampling",
        {
            "events": args.events,
            "batch_size": args.batch,
            "capacity": args.capacity,
            "repeats": args.repeats,
            "statistic": "median",
            "sampler": "WeightedReservoir (A-Res, log-space keys)",
            "seconds": seconds["weighted"],
            "events_per_s": events_per_s,
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "meets_target": events_per_s >= TARGET_EVENTS_PER_S,
            "time_biased_events_per_s": args.events / seconds["time_biased"],
            "uniform_events_per_s": args.events / seconds["uniform"],
            "baseline_keys_seconds": keys_s,
            "baseline_keys_events_per_s": args.events / keys_s,
            "ratio_to_baseline_keys": events_per_s / (args.events / keys_s),
            "baseline_offline_topk_seconds": offline_s,
            "baseline_offline_topk_events_per_s": args.events / offline_s,
            "ratio_to_baseline_offline_topk": events_per_s / (args.events / offline_s),
            "same_sample_as_offline_topk": same,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
