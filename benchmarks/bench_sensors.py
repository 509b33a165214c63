"""Memory of the code server's own work, without Dagster: the sensors' reads, ticked fast while the lake grows.

    python benchmarks/bench_sensors.py                     # 10 minutes
    python benchmarks/bench_sensors.py --duration 3m       # quicker, still in the warm-up

The soak (``bench_soak.py``) measures the whole code server, Dagster's gRPC server included. This benchmark
isolates what rt_training runs there, so a leak in it shows apart from Dagster's own memory. In a temporary folder
it starts a Kafka broker, a producer (``--rate`` events/s of the clickstream demo) and a separate ingest process
that lands micro-batches into the lake as the ingest runs do (one every second or so, each growing bronze,
silver and dead letters by one commit). This process then ticks, with no pause between ticks, the work the
sensors do each tick:

* ``kafka_offsets_sensor``: :func:`~rt_training.ingest.batch.partition_states` (a Kafka consumer, three Delta
  tables opened);
* ``retraining_sensor`` and ``periodic_retraining_sensor`` (every third tick): the newest drift report and the
  event-time clock of silver;
* ``first_champion_sensor``: whether the registry holds a champion;
* ``run_success_events_sensor``: one row appended to ``run_events`` per new silver version (per ingest run).

It samples its RSS every ``--sample-every`` seconds. Result: ``benchmarks/results/sensors.json`` with the
ticks, the silver version reached, RSS at the end of the warm-up (the first fifth) and at the end, its peak,
``rss_growth_bytes_per_h`` (least squares over the samples after the warm-up) and the same in each third of them
(a bounded growth slows down, a leak keeps its pace), and the growth per 1,000 ticks. Ticks here are about 20
times as frequent as the sensors' 5 s loop, so an hour here stands for about a day there. The tick time is
reported at the start and the end: it grows with each table's files and its log since the last checkpoint
(deltalake writes one every 100 commits; the maintenance job compacts the files daily).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result
from _soak import growth_by_part, growth_per_hour, rss_bytes

from rt_training.cli.demo import _stop
from rt_training.drift.reports import DRIFT_REPORTS_TABLE, latest_report
from rt_training.eventtime.clock import read_event_clock
from rt_training.ingest.batch import LakeLocation, partition_states, run_micro_batch
from rt_training.lake.tables import open_table
from rt_training.monitoring.run_events import RUN_EVENTS_TABLE, append_run_event
from rt_training.ops.kafka_local import LocalKafkaConfig, free_port, start_broker, stop_broker
from rt_training.spec import PipelineSpec, load_spec
from rt_training.spec.durations import parse_duration
from rt_training.stream.client import KafkaSettings
from rt_training.stream.planner import OffsetRange
from rt_training.stream.producer import ensure_topic
from rt_training.training.launch import champion_exists
from rt_training.training.registry import REGISTRY_TABLE

BIN = Path(sys.executable).parent
MAX_RECORDS_PER_BATCH = 4000


def ingest_loop(bootstrap_servers: str, lake_root: str) -> None:
    """The ingest process: a micro-batch of what is pending (at most ``MAX_RECORDS_PER_BATCH`` a partition),
    then a second's pause, until terminated."""
    settings = KafkaSettings(bootstrap_servers=bootstrap_servers)
    spec = load_spec()
    lake = LakeLocation(lake_root)
    while True:
        ranges = [
            OffsetRange(
                s.topic, s.partition, s.next_offset, min(s.end, s.next_offset + MAX_RECORDS_PER_BATCH)
            )
            for s in partition_states(settings, spec, lake)
            if s.end > s.next_offset
        ]
        if ranges:
            run_micro_batch(settings, spec, lake, ranges, f"bench-{time.time_ns()}")
        time.sleep(1.0)


def tick(spec: PipelineSpec, settings: KafkaSettings, lake: LakeLocation, n: int, last_version: int) -> int:
    """One round of the sensors' reads (and the run-events append when silver moved); silver's version."""
    partition_states(settings, spec, lake)
    if n % 3 == 0:
        latest_report(lake.uri(spec.name, DRIFT_REPORTS_TABLE))
        read_event_clock(spec, lake)
    champion_exists(lake.uri(spec.name, REGISTRY_TABLE))
    silver = open_table(lake.uri(spec.name, "silver"))
    version = -1 if silver is None else silver.version()
    if version != last_version:
        append_run_event(
            lake.uri(spec.name, RUN_EVENTS_TABLE), run_id=f"tick-{n}", job_name="ingest_job", status="SUCCESS"
        )
    return version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="10m", help="Ticking time (10m; 90s, 1h).")
    parser.add_argument("--rate", type=float, default=1500.0, help="Producer events per second.")
    parser.add_argument("--sample-every", type=float, default=10.0, help="RSS sampling period, seconds.")
    parser.add_argument("--ingest-loop", nargs=2, metavar=("BOOTSTRAP", "LAKE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest_loop:
        ingest_loop(*args.ingest_loop)
        return
    duration = parse_duration(args.duration)
    with tempfile.TemporaryDirectory(prefix="bench-sensors-") as tmp:
        work = Path(tmp)
        broker = LocalKafkaConfig(data_dir=work / "kafka", port=free_port())
        settings = start_broker(broker).settings()
        procs: list[subprocess.Popen] = []
        try:
            spec = load_spec()
            ensure_topic(settings, spec, spec.source.topic, None)
            lake = LakeLocation(str(work / "lake"))
            producer = [
                str(BIN / "rt-training"),
                "produce",
                "--rate",
                f"{args.rate:g}",
                "--bootstrap-servers",
            ]
            with (work / "producer.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*producer, settings.bootstrap_servers],
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
                )
            ingest = [sys.executable, __file__, "--ingest-loop", settings.bootstrap_servers, lake.root]
            with (work / "ingest.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(ingest, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                )
            result = measure(spec, settings, lake, duration, args.sample_every, procs)
        finally:
            for proc, name in zip(procs, ("producer", "ingest"), strict=False):
                _stop(proc, name, signal.SIGTERM)
            stop_broker(broker)
    result["settings"] = {"duration_s": duration, "rate": args.rate, "sample_every_s": args.sample_every}
    path = write_result("sensors", result)
    print(
        f"{result['ticks']} ticks, silver at version {result['silver_version']}: RSS "
        f"{result['rss_after_warm_up_bytes'] / 2**20:.0f} -> {result['rss_end_bytes'] / 2**20:.0f} MiB, "
        f"growth {result['rss_growth_bytes_per_h'] / 2**20:.1f} MiB/h "
        f"({result['rss_growth_bytes_per_1000_ticks'] / 2**20:.2f} MiB per 1,000 ticks); {path}"
    )


def measure(
    spec: PipelineSpec,
    settings: KafkaSettings,
    lake: LakeLocation,
    duration: float,
    sample_every: float,
    procs: list[subprocess.Popen],
) -> dict[str, Any]:
    """Tick for ``duration`` seconds once silver exists, sampling RSS; the result's numbers (see the module)."""
    deadline = time.monotonic() + 120.0
    while open_table(lake.uri(spec.name, "silver")) is None:
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError("the producer or the ingest process ended (or silver did not appear in 120 s)")
        time.sleep(0.5)
    samples: list[tuple[float, int, int]] = []  # (seconds, ticks, rss)
    tick_times: list[float] = []
    t0 = next_sample = time.monotonic()
    n, version = 0, -1
    while (now := time.monotonic()) - t0 < duration:
        if now >= next_sample:
            gc.collect()
            samples.append((now - t0, n, rss_bytes(os.getpid())))
            next_sample += sample_every
        n += 1
        started = time.perf_counter()
        version = tick(spec, settings, lake, n, version)
        tick_times.append(time.perf_counter() - started)
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("the producer or the ingest process ended during the benchmark")
    samples.append((time.monotonic() - t0, n, rss_bytes(os.getpid())))
    warm = [s for s in samples if s[0] >= duration / 5]
    first, last = warm[0], warm[-1]
    growth = growth_per_hour([s[0] for s in warm], [s[2] for s in warm]) or 0.0
    fifth = max(1, len(tick_times) // 5)
    return {
        "ticks": n,
        "silver_version": version,
        "rss_after_warm_up_bytes": first[2],
        "rss_end_bytes": last[2],
        "rss_peak_bytes": max(s[2] for s in samples),
        "rss_growth_bytes_per_h": growth,
        "rss_growth_bytes_per_h_by_third": growth_by_part(
            [s[0] for s in warm], [s[2] for s in warm], warm[0][0], warm[-1][0]
        ),
        "rss_growth_bytes_per_1000_ticks": round((last[2] - first[2]) / max(1, last[1] - first[1]) * 1000),
        "tick_ms_first_fifth": round(1000 * sum(tick_times[:fifth]) / fifth, 1),
        "tick_ms_last_fifth": round(1000 * sum(tick_times[-fifth:]) / fifth, 1),
        "rss_timeline": [[round(t, 1), ticks, rss] for t, ticks, rss in samples],
    }


if __name__ == "__main__":
    main()
