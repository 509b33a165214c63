"""Ingest: micro-batch throughput against a raw Kafka consume, and event-to-silver latency under Dagster.

    python benchmarks/bench_ingest.py                        # 1,000,000-event backlog, then 300 s at 2,000 events/s
    python benchmarks/bench_ingest.py --events 100000 --latency-seconds 90   # quicker
    python benchmarks/bench_ingest.py --skip-latency         # throughput only (or --skip-throughput)
    KAFKA_BOOTSTRAP_SERVERS=host:9092 python benchmarks/bench_ingest.py   # an existing cluster

Throughput. A 3-partition topic gets a backlog of the demo spec's synthetic events (``produce``). The same records
are then read by a bare kafka-python consumer (assign + seek, ``read_committed``, the reader's consumer options,
counting records until every position reaches its end offset) before and after the pipeline runs, and the faster of
the two is the baseline. The pipeline is ``run_micro_batch`` over the whole backlog in the runs
``rt_training.stream.planner.plan_runs`` plans from Kafka's and the tables' offsets, as the sensor does, into
bronze, silver and dead letters in a temporary lake, measured two ways:

- ``pipeline`` (the headline ``ratio``): as the daemon runs it, two micro-batches at a time, each in a worker
  process forked from a warm one (as ``ForkserverRunLauncher`` forks runs), the later one reading and cleaning while
  the earlier one commits; run twice, the faster counts (as for the raw consume);
- ``pipeline_one_process`` (``ratio_one_process``): one batch after another in this process.

``ratio`` = pipeline events/s / raw events/s. Dagster's own cost per run (the sensor tick, launching) is left out
here; the latency test below includes it.

Latency. ``dagster-daemon run -w workspace.yaml`` runs with a temporary ``DAGSTER_HOME`` (a copy of the repository's
``dagster.yaml``), a copy of the demo spec reading a fresh topic, and a temporary lake; its
``kafka_offsets_sensor`` launches ``ingest_job`` runs through the queued run coordinator while
``rt-training produce --rate R --duration S`` sends events stamped with the wall clock. Each silver row's latency is
the timestamp of the Delta commit that added it minus its event time. The commit that added a row is found from
the offset ranges every silver commit records in its metadata (exactly-once: the ranges of one partition never
overlap, and each row carries its ``_partition`` and ``_offset``); the rows so attributed to each commit are
checked against the commit's own ``num_added_rows``. Rows whose event time lies in the first ``--warmup-seconds``
of the stream are left out. Each latency is split into: waiting for the sensor to request a run, waiting in the
run queue, launching the run process, and the run's work until the silver commit (timestamps of the run's
Dagster events). The CPU each kind of process used while the producer ran (run workers, code server, daemon,
producer, broker) is sampled from /proc.

Everything started here (the broker, the daemon and its processes, the producer) is stopped at the end, errors
included. Result: ``benchmarks/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

from rt_training.eventtime.clock import read_event_clock
from rt_training.ingest.batch import LakeLocation, partition_states, run_micro_batch, seen_ids_outside
from rt_training.lake.exactly_once import committed_offsets
from rt_training.lake.history import commits
from rt_training.lake.tables import OFFSET_TABLES, open_table
from rt_training.ops.kafka_local import (
    LocalKafkaConfig,
    external_bootstrap,
    free_port,
    start_broker,
    stop_broker,
)
from rt_training.ops.processes import process_alive, process_args, process_stat
from rt_training.ops.run_launcher import DEFAULT_PRELOAD
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.admin import delete_topic
from rt_training.stream.client import KafkaSettings, make_consumer
from rt_training.stream.offsets import partition_offsets
from rt_training.stream.planner import OffsetRange, plan_runs
from rt_training.stream.producer import ensure_topic, produce
from rt_training.stream.reader import CONSUMER_OPTIONS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SENSOR_MAX_RUNS = 10
"""Runs the sensor requests at most per tick (``rt_training.defs.ingest``)."""
_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


class LoadSampler:
    """Samples the 1-minute load average every few seconds in a thread (other people share these cores)."""

    def __init__(self, every_s: float = 5.0):
        self.samples: list[tuple[float, float]] = []
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), os.getloadavg()[0]))
            if self._stop.wait(self._every_s):
                return

    def summary(self, since: float, until: float | None = None) -> dict[str, float | None]:
        """1-minute load average at the start of a phase, and its mean and max over the phase."""
        until = time.monotonic() if until is None else until
        values = [v for t, v in self.samples if since <= t <= until]
        if not values:  # a phase shorter than the sampling interval: the sample taken nearest before it
            values = [v for t, v in self.samples if t <= until][-1:]
        first = values[0] if values else None
        return {
            "load1_start": first,
            "load1_mean": round(float(np.mean(values)), 2) if values else None,
            "load1_max": round(max(values), 2) if values else None,
        }


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (None when it is not readable, e.g. an external broker)."""
    if pid is None:
        return None
    fields = process_stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by this process and by the broker over a phase, in cores (CPU seconds / wall seconds)."""

    def __init__(self, broker_pid: int | None):
        self.broker_pid = broker_pid
        self._wall = time.monotonic()
        self._self = time.process_time()
        self._broker = cpu_seconds(broker_pid)

    def cores(self) -> dict[str, float | None]:
        wall = time.monotonic() - self._wall
        broker_now = cpu_seconds(self.broker_pid)
        broker = None if broker_now is None or self._broker is None else (broker_now - self._broker) / wall
        return {
            "benchmark_process_cores": round((time.process_time() - self._self) / wall, 2),
            "broker_cores": None if broker is None else round(broker, 2),
        }


class ProcessCpu:
    """CPU used by each kind of process over a phase, sampled from /proc every second in a thread.

    Kinds are told by command line: Dagster's run workers (one process per run, and the warm process they are
    forked from under ``ForkserverRunLauncher``), the code server, the daemon, the producer, the Kafka broker,
    this benchmark, and every other process on the machine. A process first seen after the phase began counts
    from zero; a process's CPU after its last sample (under a second) is missed.
    """

    KINDS = (
        ("run workers", "spawn_main"),  # Dagster's default launcher: spawned by the code server
        ("run workers", "rt_training.ops.run_zygote"),  # ForkserverRunLauncher: forked from the warm process
        ("code server", "dagster api grpc"),
        ("daemon", "dagster-daemon"),
        ("producer", "rt-training produce"),
    )

    def __init__(self, broker_pid: int | None, every_s: float = 1.0):
        self._broker_pid = broker_pid
        self._every_s = every_s
        self._base: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def __enter__(self) -> ProcessCpu:
        self._started = time.monotonic()
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _kind(self, pid: int) -> str:
        if pid == os.getpid():
            return "benchmark"
        if pid == self._broker_pid:
            return "kafka broker"
        cmdline = " ".join(process_args(pid))
        for kind, marker in self.KINDS:
            if marker in cmdline:
                return kind
        return "other"

    def _sample(self, first: bool = False) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            used = cpu_seconds(pid)
            if used is None:
                continue
            if pid not in self._last:
                self._base[pid] = used if first else 0.0
                self._last[pid] = (self._kind(pid), used)
            else:
                self._last[pid] = (self._last[pid][0], used)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._sample()

    def cores(self) -> dict[str, float]:
        """Kind -> CPU seconds per wall second since the phase began (2.0 = both cores of this machine)."""
        wall = time.monotonic() - self._started
        used: dict[str, float] = {}
        for pid, (kind, last) in self._last.items():
            used[kind] = used.get(kind, 0.0) + last - self._base[pid]
        out = {kind: round(seconds / wall, 3) for kind, seconds in sorted(used.items())}
        out["total"] = round(sum(used.values()) / wall, 3)
        return out


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p95": None, "max": None, "mean": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "max": round(float(values.max()), 3),
        "mean": round(float(values.mean()), 3),
    }


# --- broker ---------------------------------------------------------------------------------------------------


def kafka_cluster(stack: ExitStack) -> tuple[KafkaSettings, str, int | None]:
    """``KAFKA_BOOTSTRAP_SERVERS``, or a local broker on a free port with a temporary data folder (stopped on exit).

    Returns the settings, a description, and the local broker's pid (None for an external cluster).
    """
    external = external_bootstrap()
    if external:
        return KafkaSettings.from_env(), f"external cluster {external}", None
    data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-kafka-")))
    config = LocalKafkaConfig(data_dir=data_dir, port=free_port(), heap="1g")
    say(f"starting a local Kafka broker in {data_dir}")
    started = start_broker(config)
    stack.callback(say, "stopped the local Kafka broker")
    stack.callback(stop_broker, config)
    pid = started.state.pid if started.state else None
    description = f"local broker {started.bootstrap_servers} (pid {pid}), started in {started.startup_s:.1f}s"
    say(description)
    return started.settings(), description, pid


# --- throughput -----------------------------------------------------------------------------------------------


def raw_consume(settings: KafkaSettings, topic: str) -> dict[str, Any]:
    """Every record of ``topic`` from its earliest to its end offsets with a bare consumer: the reader's options,
    assign + seek, ``read_committed``, done when each position reaches the end offset. Counts records only."""
    from kafka import TopicPartition

    started = time.monotonic()
    consumer = make_consumer(settings, **CONSUMER_OPTIONS)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begin[tp])
        pending = {tp for tp in tps if end[tp] > begin[tp]}
        records = polls = 0
        while pending:
            batches = consumer.poll(timeout_ms=500)
            polls += 1
            for records_of_tp in batches.values():
                records += len(records_of_tp)
            for tp in list(pending):
                if consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
    finally:
        consumer.close(autocommit=False)
    seconds = time.monotonic() - started
    return {
        "records": records,
        "seconds": round(seconds, 3),
        "events_per_s": round(records / seconds),
        "polls": polls,
    }


def plan_from_tables(
    settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation, topic: str
) -> list[list[OffsetRange]]:
    """The runs the sensor would request now: offsets from Kafka and the lake tables, the spec's ingest policy."""
    states = partition_states(settings, spec, lake, topic)
    policy = spec.ingest
    plan = plan_runs(
        states,
        planned_until={},
        min_records=policy.min_records,
        max_wait_s=policy.max_wait_s,
        max_records_per_run=policy.max_records_per_run,
        waited_s=float(policy.max_wait_s),  # a backlog has waited: the tail run is due too
        max_runs=SENSOR_MAX_RUNS,
    )
    return plan.runs


def _batch_row(
    report: Any, ranges: list[OffsetRange], stamps: dict[str, float], t0: float, wall: float
) -> dict:
    return {
        "records": report.records,
        "offsets": sum(r.size for r in ranges),
        "seconds": round(wall, 3),
        "offset_check_s": round(stamps["read"] - t0, 3),
        "read_s": round(report.read_s, 3),
        "waited_s": round(report.waited_s, 3),
        "clean_s": round(report.clean_s, 3),
        **{
            f"commit_{table}_s": round(stamps[f"committed {table}"] - stamps[f"commit {table}"], 3)
            for table in OFFSET_TABLES
        },
        "silver_rows": report.clean.silver_rows if report.clean else 0,
        "dead_letter_rows": report.clean.dead_letter_rows if report.clean else 0,
    }


def _say_batch(n: int, row: dict[str, Any], extra: str = "") -> None:
    say(
        f"batch {n}: {row['records']:,} records in {row['seconds']:.2f}s (read {row['read_s']:.2f}s, "
        f"waited {row['waited_s']:.2f}s, clean {row['clean_s']:.2f}s{extra}, commits "
        + ", ".join(f"{t} {row[f'commit_{t}_s']:.2f}s" for t in OFFSET_TABLES)
        + ")"
    )


def ingest_backlog(
    settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation, topic: str
) -> tuple[float, list[dict[str, Any]]]:
    """Run micro-batches one after another in this process until the tables hold the whole topic; returns the
    pipeline's seconds and per-batch rows.

    Before each batch the duplicate-history scan (:func:`seen_ids_outside`) is also timed on its own, outside the
    timed pipeline: inside ``run_micro_batch`` it runs in a thread next to the Kafka read, so its cost is otherwise
    hidden.
    """
    batches: list[dict[str, Any]] = []
    pipeline_s = 0.0
    while True:
        t_plan = time.monotonic()
        runs = plan_from_tables(settings, spec, lake, topic)
        pipeline_s += time.monotonic() - t_plan
        if not runs:
            return pipeline_s, batches
        for ranges in runs:
            t_probe = time.monotonic()
            seen_ids_outside(spec, lake, ranges, read_event_clock(spec, lake).watermark)
            dedup_query_s = time.monotonic() - t_probe
            row = _timed_batch(settings, spec, lake, ranges, f"bench-{len(batches):03d}")
            pipeline_s += row["seconds"]
            row["dedup_query_s"] = round(dedup_query_s, 3)
            batches.append(row)
            _say_batch(len(batches), row, f", duplicate-history scan alone {dedup_query_s:.2f}s")


def _timed_batch(
    settings: KafkaSettings,
    spec: PipelineSpec,
    lake: LakeLocation,
    ranges: list[OffsetRange],
    run_id: str,
    **options: Any,
) -> dict[str, Any]:
    """``run_micro_batch`` with the time of each phase (``options`` go to it as they are)."""
    stamps: dict[str, float] = {}
    t0 = time.monotonic()
    report = run_micro_batch(
        settings,
        spec,
        lake,
        ranges,
        run_id,
        on_phase=lambda name: stamps.__setitem__(name, time.monotonic()),
        **options,
    )
    return _batch_row(report, ranges, stamps, t0, time.monotonic() - t0)


def _overlapped_batch(
    settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation, ranges: list[OffsetRange], run_id: str
) -> dict[str, Any]:
    """One micro-batch in a worker process, waiting for the batch before it as an ingest run does."""
    return _timed_batch(
        settings,
        spec,
        lake,
        ranges,
        run_id,
        wait_for_turn=lambda: "the previous micro-batch",
        turn_timeout_s=300.0,
    )


def _warm_worker(hold_s: float) -> int:
    """Import what a micro-batch needs, then hold the worker a moment so that the other task starts another."""
    import rt_training.clean.pipeline
    import rt_training.ingest.batch
    import rt_training.stream.reader  # noqa: F401

    time.sleep(hold_s)
    return os.getpid()


def ingest_backlog_overlapped(
    settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation, topic: str
) -> tuple[float, list[dict[str, Any]]]:
    """The backlog as the daemon runs it: the sensor's runs, two at a time, each in a process of its own forked
    from a warm one (as ``ForkserverRunLauncher`` forks runs), the later one reading and cleaning while the earlier
    one commits (``dagster.yaml`` lets two ingest runs of a pipeline run at once)."""
    batches: list[dict[str, Any]] = []
    # Forked from a warm server process that imported what ForkserverRunLauncher's warm process imports, never
    # from this one: this process opens Delta tables, and deltalake's runtime panics in a child forked after that.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(DEFAULT_PRELOAD))
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        # Both workers started and warm before the clock starts, as the launcher's warm process is before runs.
        list(pool.map(_warm_worker, [0.5, 0.5]))
        t0 = time.monotonic()
        while True:
            runs = plan_from_tables(settings, spec, lake, topic)
            if not runs:
                return time.monotonic() - t0, batches
            futures = [
                pool.submit(_overlapped_batch, settings, spec, lake, ranges, f"bench-{len(batches) + i:03d}")
                for i, ranges in enumerate(runs)
            ]
            for future in futures:
                batches.append(future.result())
                _say_batch(len(batches), batches[-1])


def table_rows(lake: LakeLocation, spec: PipelineSpec) -> dict[str, int]:
    out = {}
    for table in OFFSET_TABLES:
        dt = open_table(lake.uri(spec.name, table))
        out[table] = 0 if dt is None else dt.to_pyarrow_dataset().count_rows()
    return out


def throughput(
    settings: KafkaSettings,
    spec: PipelineSpec,
    args: argparse.Namespace,
    broker_pid: int | None,
    load: LoadSampler,
) -> dict[str, Any]:
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {"topic": topic}
    with ExitStack() as stack:
        stack.callback(delete_topic, settings, topic)
        say(f"producing a backlog of {args.events:,} events to {topic} ({args.partitions} partitions)")
        t_phase = time.monotonic()
        summary = produce(
            settings,
            spec,
            topic,
            count=args.events,
            seed=args.seed,
            bad_ratio=args.bad_ratio,
            partitions=args.partitions,
            progress=lambda p: say(p.line()),
            progress_every_s=15.0,
        )
        say(summary.line())
        result["produce"] = {
            "events": summary.sent,
            "bad_records": sum(summary.bad.values()),
            "seconds": round(summary.seconds, 2),
            "events_per_s": round(summary.events_per_s),
            **load.summary(t_phase),
        }

        raws = []
        for attempt in ("before", "after"):
            if attempt == "after":
                # Twice, around the one-process run, and the faster counts, as for the raw consume: on this shared
                # machine one run of either varies by about 10%.
                pipelines = [_timed_pipeline(settings, spec, topic, broker_pid, load, overlapped=True)]
                result["pipeline_one_process"] = _timed_pipeline(
                    settings, spec, topic, broker_pid, load, overlapped=False
                )
                pipelines.append(_timed_pipeline(settings, spec, topic, broker_pid, load, overlapped=True))
                result["pipeline_runs_events_per_s"] = [p["events_per_s"] for p in pipelines]
                result["pipeline"] = max(pipelines, key=lambda p: p["events_per_s"])
            say(f"raw consume ({attempt} the pipeline)")
            t_phase = time.monotonic()
            cpu = CpuMeter(broker_pid)
            raw = raw_consume(settings, topic)
            raw.update(cpu.cores(), **load.summary(t_phase))
            say(
                f"raw consume: {raw['records']:,} records in {raw['seconds']:.2f}s, {raw['events_per_s']:,}/s"
            )
            if raw["records"] != summary.sent:
                raise SystemExit(
                    f"raw consume read {raw['records']} records of {topic}, produced {summary.sent}"
                )
            raws.append(raw)
    result["raw_consume_runs"] = raws
    return result


def _timed_pipeline(
    settings: KafkaSettings,
    spec: PipelineSpec,
    topic: str,
    broker_pid: int | None,
    load: LoadSampler,
    overlapped: bool,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-lake-", ignore_cleanup_errors=True) as lake_dir:
        lake = LakeLocation(lake_dir)
        how = "two overlapping worker processes" if overlapped else "one process, one batch after another"
        say(f"pipeline ({how}): micro-batches of at most {spec.ingest.max_records_per_run:,} records")
        t_phase = time.monotonic()
        cpu = CpuMeter(broker_pid)
        runner = ingest_backlog_overlapped if overlapped else ingest_backlog
        seconds, batches = runner(settings, spec, lake, topic)
        cores = cpu.cores()
        loads = load.summary(t_phase)
        rows = table_rows(lake, spec)
        ends = partition_offsets(settings, topic)
        for table in OFFSET_TABLES:
            done = committed_offsets(lake.uri(spec.name, table), spec.name, topic, list(ends))
            if any(done[p] != end for p, (_, end) in ends.items()):
                raise SystemExit(f"pipeline: {table} stands at {done}, Kafka ends at {ends}")
    records = sum(b["records"] for b in batches)
    if rows["bronze"] != records or rows["silver"] + rows["dead_letters"] != records:
        raise SystemExit(f"pipeline: tables hold {rows} rows for {records} records read")
    totals = {
        key: round(sum(b[key] for b in batches), 3)
        for key in (
            "offset_check_s",
            "read_s",
            "waited_s",
            "dedup_query_s",
            "clean_s",
            *(f"commit_{t}_s" for t in OFFSET_TABLES),
        )
        if all(key in b for b in batches)
    }
    say(f"pipeline: {records:,} records in {seconds:.2f}s, {records / seconds:,.0f}/s; {totals}")
    return {
        "how": how,
        "records": records,
        "seconds": round(seconds, 3),
        "events_per_s": round(records / seconds),
        "batches": len(batches),
        "batch_records": [b["records"] for b in batches],
        "phase_seconds": totals,
        "phase_share": {k: round(v / seconds, 3) for k, v in totals.items()},
        "note": (
            "phase seconds are summed over batches; with overlapping batches they add up to more than the wall "
            "time, and waited_s is a batch's wait for the previous batch's commits"
        )
        if overlapped
        else "",
        "table_rows": rows,
        "per_batch": batches,
        **cores,
        **loads,
    }


# --- latency --------------------------------------------------------------------------------------------------


def _process_tree(root: int) -> dict[int, str]:
    """pid -> start time (a pid-reuse guard) of ``root`` and every descendant."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = process_stat(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        starts[int(entry.name)] = fields[19]
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in starts and pid not in out:
            out[pid] = starts[pid]
            todo.extend(children.get(pid, []))
    return out


class Started:
    """A process started in its own session; remembers its descendants so that :meth:`stop` ends all of them."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.log = log
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.known: dict[int, str] = {}
        self.watch()

    def watch(self) -> None:
        """Record the current descendants (called periodically: a child may leave the session)."""
        if self.proc.poll() is None:
            self.known.update(_process_tree(self.proc.pid))

    def stop(self, first: int = signal.SIGINT, grace_s: float = 30.0) -> list[int]:
        """``first`` to the process, then SIGTERM and SIGKILL to its group and to every descendant seen; returns the
        pids still alive afterwards (should be none)."""
        self.watch()
        steps = ((first, grace_s, False), (signal.SIGTERM, 10.0, True), (signal.SIGKILL, 5.0, True))
        for sig, wait_s, everyone in steps:
            alive = [pid for pid, start in self.known.items() if process_alive(pid, start)]
            if not alive:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if everyone:
                    os.killpg(self.proc.pid, sig)
                else:
                    os.kill(self.proc.pid, sig)
            if everyone:
                for pid in alive:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(process_alive(p, s) for p, s in self.known.items()):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1.0)
        return [pid for pid, start in self.known.items() if process_alive(pid, start)]


@contextlib.contextmanager
def started(name: str, cmd: list[str], env: dict[str, str], log: Path, **stop: Any) -> Iterator[Started]:
    proc = Started(name, cmd, env, log)
    say(f"{name} started (pid {proc.proc.pid}); log {log}")
    try:
        yield proc
    finally:
        left = proc.stop(**stop)
        say(
            f"{name} stopped (exit {proc.proc.returncode}); {len(proc.known)} processes seen, {len(left)} left"
        )
        if left:
            raise RuntimeError(f"{name}: processes {left} did not stop")


def latency_spec(workdir: Path, topic: str) -> Path:
    """A copy of the demo spec that reads ``topic``."""
    import yaml

    from rt_training.specs import __file__ as specs_init

    document = yaml.safe_load((Path(specs_init).parent / "clickstream.yaml").read_text())
    document["source"]["topic"] = topic
    path = workdir / "spec.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def wait_for_sensor(instance: Any, daemon: Started, timeout_s: float = 180.0) -> float:
    """Seconds until the sensor's first tick is recorded (the daemon has loaded the code location)."""
    from dagster._core.definitions.run_request import InstigatorType

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {daemon.proc.returncode}; see {daemon.log}")
        daemon.watch()
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1):
                return time.monotonic() - t0
        time.sleep(1.0)
    raise RuntimeError(f"kafka_offsets_sensor did not tick within {timeout_s:.0f}s; see {daemon.log}")


def lag(settings: KafkaSettings, spec: PipelineSpec, lake: LakeLocation, topic: str) -> tuple[int, int]:
    """(records in Kafka, records committed in silver) over all partitions."""
    ends = partition_offsets(settings, topic)
    done = committed_offsets(lake.uri(spec.name, "silver"), spec.name, topic, list(ends))
    return sum(e for _, e in ends.values()), sum(done[p] or 0 for p in ends)


def latency(
    settings: KafkaSettings,
    spec: PipelineSpec,
    args: argparse.Namespace,
    broker_pid: int | None,
    load: LoadSampler,
) -> dict[str, Any]:
    from dagster import DagsterInstance

    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-ingest-latency-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        home = work / "dagster_home"
        home.mkdir()
        shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
        lake = LakeLocation(str(work / "lake"))
        spec_path = latency_spec(work, topic)
        ensure_topic(settings, spec, topic, args.partitions)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "RT_TRAINING_SPEC": str(spec_path),
            "RT_TRAINING_LAKE": lake.root,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        }
        daemon_cmd = [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")]
        producer_cmd = [
            str(BIN / "rt-training"), "produce", "--spec", str(spec_path), "--topic", topic,
            "--rate", str(args.rate), "--duration", str(args.latency_seconds), "--seed", str(args.seed),
            "--bad-ratio", str(args.bad_ratio), "--bootstrap-servers", settings.bootstrap_servers,
            "--progress-every", "30",
        ]  # fmt: skip
        with DagsterInstance.from_config(str(home)) as instance:
            with started("dagster-daemon", daemon_cmd, env, work / "daemon.log") as daemon:
                ready_s = wait_for_sensor(instance, daemon)
                say(f"dagster-daemon: kafka_offsets_sensor ticked {ready_s:.1f}s after start")
                t_phase = time.monotonic()
                cpu = CpuMeter(broker_pid)
                with (
                    ProcessCpu(broker_pid) as by_process,
                    started("producer", producer_cmd, env, work / "producer.log", grace_s=90.0) as producer,
                ):
                    follow(
                        settings, spec, lake, topic, instance, [daemon, producer], args.latency_seconds + 120
                    )
                    produced_ok = producer.proc.returncode == 0
                    cores_by_process = by_process.cores()
                if not produced_ok:
                    raise RuntimeError(
                        f"the producer failed; see {producer.log}:\n{producer.log.read_text()[-2000:]}"
                    )
                catch_up_s = wait_caught_up(settings, spec, lake, topic, [daemon], timeout_s=300.0)
                cores = cpu.cores()
                loads = load.summary(t_phase)
            result = analyse(spec, lake, instance, args.warmup_seconds)
        result.update(
            topic=topic,
            rate=args.rate,
            duration_s=args.latency_seconds,
            sensor_ready_s=round(ready_s, 1),
            catch_up_after_producer_s=round(catch_up_s, 1),
            producer_summary=_last_line(producer.log),
            cores_by_process_while_producing=cores_by_process,
            **cores,
            **loads,
        )
    return result


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def follow(
    settings: KafkaSettings,
    spec: PipelineSpec,
    lake: LakeLocation,
    topic: str,
    instance: Any,
    procs: list[Started],
    timeout_s: float,
) -> None:
    """Report progress every 30 s until the producer (the last of ``procs``) exits."""
    from dagster import DagsterRunStatus, RunsFilter

    producer = procs[-1]
    t0 = time.monotonic()
    next_report = t0 + 30.0
    while producer.proc.poll() is None:
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"the producer is still running after {timeout_s:.0f}s; see {producer.log}")
        if any(p.proc.poll() is not None for p in procs[:-1]):
            raise RuntimeError(f"dagster-daemon exited; see {procs[0].log}")
        for p in procs:
            p.watch()
        if time.monotonic() >= next_report:
            produced, committed = lag(settings, spec, lake, topic)
            counts = {
                status.value.lower(): instance.get_runs_count(
                    RunsFilter(job_name="ingest_job", statuses=[status])
                )
                for status in (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED, DagsterRunStatus.SUCCESS)
            }
            failed = instance.get_runs_count(
                RunsFilter(job_name="ingest_job", statuses=[DagsterRunStatus.FAILURE])
            )
            say(
                f"latency: {produced:,} records in Kafka, {committed:,} in silver ({produced - committed:,} behind); "
                f"runs {counts}, failed {failed}; load {os.getloadavg()[0]:.2f}"
            )
            next_report += 30.0
        time.sleep(1.0)


def wait_caught_up(
    settings: KafkaSettings,
    spec: PipelineSpec,
    lake: LakeLocation,
    topic: str,
    procs: list[Started],
    timeout_s: float,
) -> float:
    t0 = time.monotonic()
    while True:
        produced, committed = lag(settings, spec, lake, topic)
        if committed >= produced:
            say(
                f"latency: silver holds all {produced:,} records, {time.monotonic() - t0:.1f}s after the producer"
            )
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"silver still {produced - committed:,} records behind after {timeout_s:.0f}s")
        for p in procs:
            p.watch()
        time.sleep(2.0)


def run_timeline(instance: Any, run_id: str) -> dict[str, Any]:
    """Wall-clock timestamps of a run's lifecycle events and its ingest metadata."""
    from dagster import DagsterEventType

    wanted = {
        DagsterEventType.RUN_ENQUEUED: "enqueued",
        DagsterEventType.RUN_DEQUEUED: "dequeued",
        DagsterEventType.RUN_STARTING: "starting",
        DagsterEventType.RUN_START: "started",
        DagsterEventType.STEP_START: "step_start",
        DagsterEventType.STEP_SUCCESS: "step_end",
        DagsterEventType.RUN_SUCCESS: "ended",
    }
    out: dict[str, Any] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        name = wanted.get(event.event_type)
        if name and name not in out:
            out[name] = entry.timestamp
        out.setdefault("event_types", []).append(event.event_type.value)
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            meta = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
            for key in ("records_in", "read_s", "clean_s", "duration_s", "waited_for_previous_batch_s"):
                if key in meta:
                    out[key] = meta[key]
    return out


def sensor_ticks(instance: Any, since: float) -> dict[str, Any]:
    """How often ``kafka_offsets_sensor`` ticked after ``since`` (epoch seconds), how long a tick took, and what
    came of it (its minimum interval is 5 s)."""
    from dagster._core.definitions.run_request import InstigatorType

    ticks = [
        tick
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if state.instigator_name == "kafka_offsets_sensor"
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id)
        if tick.timestamp >= since
    ]
    ticks.sort(key=lambda t: t.timestamp)
    starts = np.array([t.timestamp for t in ticks])
    durations = np.array([t.end_timestamp - t.timestamp for t in ticks if t.end_timestamp])
    statuses: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for tick in ticks:
        statuses[tick.status.value] = statuses.get(tick.status.value, 0) + 1
        if tick.skip_reason:
            reason = re.sub(r"\d+(\.\d+)?", "N", tick.skip_reason)
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "ticks": len(ticks),
        "by_status": statuses,
        "skip_reasons": reasons,
        "runs_requested": sum(len(t.run_ids) for t in ticks),
        "seconds_between_ticks": percentiles(np.diff(starts)) if len(starts) > 1 else {},
        "tick_seconds": percentiles(durations),
    }


def analyse(spec: PipelineSpec, lake: LakeLocation, instance: Any, warmup_s: float) -> dict[str, Any]:
    """Per silver row: commit time - event time, attributed through each commit's offset ranges."""
    from dagster import RunsFilter

    uri = lake.uri(spec.name, "silver")
    data = open_table(uri).to_pyarrow_dataset().to_table(columns=["_partition", "_offset", spec.time_field])
    partition = data.column("_partition").to_numpy()
    offset = data.column("_offset").to_numpy()
    event_s = data.column(spec.time_field).cast("int64").to_numpy() / 1e6
    data_commits = sorted(
        (c for c in commits(uri) if c.operation == "WRITE" and c.ranges), key=lambda c: c.version
    )
    commit_index = np.full(len(offset), -1)
    for p in np.unique(partition):
        spans = sorted(
            (int(r["start"]), int(r["end"]), i)
            for i, c in enumerate(data_commits)
            for r in c.ranges
            if int(r["partition"]) == int(p)
        )
        starts = np.array([s for s, _, _ in spans])
        rows = np.flatnonzero(partition == p)
        pos = np.searchsorted(starts, offset[rows], side="right") - 1
        ends = np.array([e for _, e, _ in spans])[pos]
        if (pos < 0).any() or (offset[rows] >= ends).any():
            raise RuntimeError(f"silver rows of partition {p} outside every commit's offset ranges")
        commit_index[rows] = np.array([i for _, _, i in spans])[pos]
    per_commit = np.bincount(commit_index, minlength=len(data_commits))
    for i, c in enumerate(data_commits):
        added = c.metrics.get("num_added_rows")
        if added is not None and int(added) != int(per_commit[i]):
            raise RuntimeError(f"silver version {c.version}: {per_commit[i]} rows attributed, {added} added")
    commit_s = np.array([c.timestamp.timestamp() for c in data_commits])[commit_index]
    latency_s = commit_s - event_s
    steady = event_s >= event_s.min() + warmup_s

    timelines = {c.custom.get("run_id"): run_timeline(instance, c.custom["run_id"]) for c in data_commits}
    runs = [timelines[c.custom.get("run_id")] for c in data_commits]

    def per_row(key_from: str | None, key_to: str) -> np.ndarray:
        start = (
            event_s if key_from is None else np.array([r.get(key_from, np.nan) for r in runs])[commit_index]
        )
        end = (
            commit_s if key_to == "commit" else np.array([r.get(key_to, np.nan) for r in runs])[commit_index]
        )
        return (end - start)[steady]

    breakdown = {
        "event_to_run_created_s": per_row(None, "enqueued"),
        "queued_s": per_row("enqueued", "starting"),
        "launch_s": per_row("starting", "started"),
        "run_start_to_silver_commit_s": per_row("started", "commit"),
    }
    steady_runs = [
        r
        for r, c in zip(runs, data_commits, strict=True)
        if c.timestamp.timestamp() >= event_s.min() + warmup_s
    ]

    def run_stat(a: str, b: str) -> dict[str, float | None]:
        return percentiles(np.array([r[b] - r[a] for r in steady_runs if a in r and b in r]))

    def meta_stat(key: str) -> dict[str, float | None]:
        """Percentiles of a number the runs' materializations carry."""
        return percentiles(np.array([r[key] for r in steady_runs if key in r], dtype=float))

    all_runs = instance.get_run_records(RunsFilter(job_name="ingest_job"))
    statuses: dict[str, int] = {}
    for rec in all_runs:
        statuses[rec.dagster_run.status.value] = statuses.get(rec.dagster_run.status.value, 0) + 1
    other_jobs: dict[str, int] = {}  # runs the other sensors and schedules of the code location launched
    for rec in instance.get_run_records():
        if rec.dagster_run.job_name != "ingest_job":
            other_jobs[rec.dagster_run.job_name] = other_jobs.get(rec.dagster_run.job_name, 0) + 1
    created = sorted(r["enqueued"] for r in steady_runs if "enqueued" in r)
    commit_times = np.array([c.timestamp.timestamp() for c in data_commits])
    steady_commits = commit_times[commit_times >= event_s.min() + warmup_s]
    return {
        "silver_rows": len(latency_s),
        "steady_rows": int(steady.sum()),
        "warmup_s": warmup_s,
        "method": (
            "per silver row: timestamp of the silver commit whose recorded offset ranges contain the row's "
            "(_partition, _offset), minus its event time; rows per commit checked against num_added_rows"
        ),
        "latency_s": percentiles(latency_s[steady]),
        "latency_all_rows_s": percentiles(latency_s),
        "mean_breakdown_s": {k: round(float(np.nanmean(v)), 3) for k, v in breakdown.items()},
        "p95_breakdown_s": {k: round(float(np.nanpercentile(v, 95)), 3) for k, v in breakdown.items()},
        "sensor": sensor_ticks(instance, event_s.min() + warmup_s),
        "other_job_runs": other_jobs,
        "runs": {
            "total": len(all_runs),
            "event_types_of_first_run": sorted(set(runs[0].get("event_types", []))) if runs else [],
            "by_status": statuses,
            "silver_commits": len(data_commits),
            "seconds_between_silver_commits": percentiles(np.diff(steady_commits)),
            "steady_runs": len(steady_runs),
            "records_per_run": percentiles(
                np.array([r.get("records_in", 0) for r in steady_runs], dtype=float)
            ),
            "seconds_between_run_requests": percentiles(np.diff(np.array(created)))
            if len(created) > 1
            else {},
            "queued_s (enqueued to starting)": run_stat("enqueued", "starting"),
            "launch_s (starting to run start)": run_stat("starting", "started"),
            "run_start_to_step_start_s": run_stat("started", "step_start"),
            "step_s": run_stat("step_start", "step_end"),
            "ingest_batch_s (run_micro_batch)": meta_stat("duration_s"),
            "read_s (in the run)": meta_stat("read_s"),
            "waited_for_previous_batch_s (in the run)": meta_stat("waited_for_previous_batch_s"),
            "clean_s (in the run)": meta_stat("clean_s"),
            "step_end_to_run_end_s": run_stat("step_end", "ended"),
            "created_to_end_s": run_stat("enqueued", "ended"),
        },
    }


# --- main -----------------------------------------------------------------------------------------------------


def _terminated(signum: int, _frame: object) -> None:
    say(f"signal {signum}: stopping what this benchmark started")
    sys.exit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="backlog size (default 1,000,000)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the benchmark topics")
    parser.add_argument("--bad-ratio", type=float, default=0.01, help="share of bad records (default 0.01)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--latency-seconds", type=float, default=300.0, help="producer run for the latency test"
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s of the latency test")
    parser.add_argument(
        "--warmup-seconds", type=float, default=30.0, help="event time left out of latency stats"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the broker, the daemon and the producer are stopped.
    signal.signal(signal.SIGTERM, _terminated)
    # Started in the background by a non-interactive shell, this process ignores SIGINT and so would its children
    # (the producer then could not be stopped with Ctrl-C's signal); a handler here is reset to the default on exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    spec = load_spec()
    result: dict[str, Any] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    say(f"load average {result['load_average_at_start']} on {os.cpu_count()} cores")
    with LoadSampler() as load, ExitStack() as stack:
        settings, broker, broker_pid = kafka_cluster(stack)
        result["broker"] = broker
        if not args.skip_throughput:
            tp = throughput(settings, spec, args, broker_pid, load)
            raw = max(tp["raw_consume_runs"], key=lambda r: r["events_per_s"])
            result.update(
                events=tp["pipeline"]["records"],
                pipeline_events_per_s=tp["pipeline"]["events_per_s"],
                raw_consume_events_per_s=raw["events_per_s"],
                ratio=round(tp["pipeline"]["events_per_s"] / raw["events_per_s"], 3),
                ratio_one_process=round(tp["pipeline_one_process"]["events_per_s"] / raw["events_per_s"], 3),
                target_ratio=0.7,
            )
            say(
                f"throughput: pipeline {result['pipeline_events_per_s']:,}/s, raw {result['raw_consume_events_per_s']:,}/s,"
                f" ratio {result['ratio']}"
            )
            result["throughput"] = tp
        if not args.skip_latency:
            try:
                lat = latency(settings, spec, args, broker_pid, load)
            except Exception as exc:  # the throughput numbers are still written, then the run fails
                say(f"latency test failed: {exc}")
                result["latency_error"] = f"{type(exc).__name__}: {exc}"
            else:
                result.update(
                    latency_p50_s=lat["latency_s"]["p50"],
                    latency_p95_s=lat["latency_s"]["p95"],
                    target_latency_p95_s=15.0,
                    latency=lat,
                )
                say(f"latency: p50 {result['latency_p50_s']}s, p95 {result['latency_p95_s']}s")
    result["settings"] = {
        "events": args.events,
        "partitions": args.partitions,
        "bad_ratio": args.bad_ratio,
        "seed": args.seed,
        "max_records_per_run": spec.ingest.max_records_per_run,
        "min_records": spec.ingest.min_records,
        "max_wait_s": spec.ingest.max_wait_s,
        "consumer": dict(CONSUMER_OPTIONS),
        "latency_rate": args.rate,
        "latency_seconds": args.latency_seconds,
        "warmup_seconds": args.warmup_seconds,
    }
    result["load_samples"] = [round(v, 2) for _, v in load.samples]
    path = write_result("ingest", result)
    say(f"written to {path}")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)}, indent=2))
    if "latency_error" in result:
        sys.exit(1)


if __name__ == "__main__":
    main()
