"""Soak: the whole loop under the real Dagster daemon for a long while, with broker restarts and drift.

    python benchmarks/bench_soak.py               # make bench-soak: 30 min at 2,000 events/s, a broker restart every 5 min
    python benchmarks/bench_soak.py --duration 6m --rate 500 --broker-restart-every 2m   # a quicker check
    python benchmarks/bench_soak.py --broker-stop kill --drift-at 10m --keep   # SIGKILL only; keep the work folder

What it starts, in a temporary folder, and stops at the end, on an error or on Ctrl-C (by pid, with escalation):

- a local KRaft broker on a free port (:mod:`rt_training.ops.kafka_local`); its data folder outlives each restart,
  so the topic and its offsets stay. ``KAFKA_BOOTSTRAP_SERVERS`` is ignored: the soak restarts its own broker;
- ``dagster dev`` (daemon, code server, webserver; sensors and schedules on) with a fresh ``DAGSTER_HOME`` holding
  a copy of ``dagster.yaml``, a fresh lake, and a copy of the demo spec reading a fresh topic, as ``rt-training
  demo`` starts it (and stopped as the demo stops it: runs in flight canceled through the webserver, then SIGINT,
  then SIGKILL);
- once the ingest sensor ticks, the producer (``rt-training produce``) at ``--rate`` for ``--duration`` with drift
  at ``--drift-at`` (default half the duration). A producer that fails is started again for the time left, with
  the next seed (so its ids do not repeat) and the drift point moved to stay at the same wall time.

While the producer runs, every ``--broker-restart-every`` the broker is stopped (``--broker-stop``: SIGKILL, a
clean SIGTERM stop, or alternating, starting with SIGKILL) and started again at once. Every ``--sample-every``
seconds it samples, from /proc, the resident memory and open file descriptors of every process under ``dagster
dev`` by kind (daemon, code server, webserver, run launcher's warm process, runs), and the lag: Kafka's end
offsets minus the offsets committed in all three offset tables (bronze, silver, dead letters). A progress line
goes out every ``--progress-every`` seconds.

When the producer is done it waits (up to ``--catch-up-timeout``) until the lake has every offset, then reads:

- ``events``: the records Kafka holds (what the producer delivered; its own acknowledged count beside it);
- ``lost`` / ``duplicated``: each offset of ``[earliest, end)`` per partition exactly once in bronze, and exactly
  once in silver + dead letters together (:func:`_soak.reconcile`); must be 0;
- ``failed_runs`` and their causes, grouped by job and the first line of the error, from the instance's runs;
- ``rss_growth_bytes_per_h``: the largest, over the long-lived processes (daemon, code server, webserver, the run
  launcher's warm process, ``dagster dev``), of the slope of a line fitted to the kind's total resident memory over
  the second half of the producing phase (warm-up left out); the runs' fit (the largest run process at each
  sample) is in ``rss_growth_bytes_per_h_by_kind`` only, since it follows which jobs run (ingest or training);
- ``max_lag`` and the lag when the producer stopped, and the broker restarts with how long ingestion took to
  commit again and to catch up with what Kafka held when the broker was back.

Whether the machine kept up is stated, not hidden: the rate achieved, the lag's growth over the second half, and
``keeps_up`` (the rate asked was reached and the lake held every offset within a minute of the producer's end).
Result: ``benchmarks/results/soak.json`` (the work folder with every log is kept with ``--keep`` or on an error).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kafka.errors import KafkaError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result
from _soak import (
    failure_causes,
    growth_by_part,
    growth_per_hour,
    process_kinds,
    reconcile,
    recovery_seconds,
    rss_bytes,
    user_error,
)

from rt_training.cli.demo import TICK_TIMEOUT_ENV, _interrupted, _stop, cancel_runs_in_flight
from rt_training.ingest.batch import LakeLocation
from rt_training.lake.exactly_once import committed_offsets
from rt_training.lake.tables import OFFSET_TABLES, open_table
from rt_training.ops.kafka_local import (
    LocalKafkaConfig,
    broker_status,
    free_port,
    start_broker,
    stop_broker,
)
from rt_training.ops.processes import process_alive, process_stat
from rt_training.spec import SPEC_ENV_VAR, load_spec
from rt_training.spec.durations import parse_duration
from rt_training.stream.client import BOOTSTRAP_ENV_VAR, KafkaConnectionProblem, KafkaSettings
from rt_training.stream.offsets import partition_offsets
from rt_training.stream.producer import ensure_topic

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOPIC = "soak"
# Where each offset table keeps a row's Kafka coordinates.
COORDS = {
    "bronze": ("topic", "partition", "offset"),
    "silver": ("_topic", "_partition", "_offset"),
    "dead_letters": ("topic", "partition", "offset"),
}
# A probe of Kafka must not hold the sampling loop while the broker is down.
PROBE = {"connect_timeout_s": 2.0, "request_timeout_s": 5.0}
# Ingestion kept up when, after the producer stopped, the lake held every offset within this many seconds.
KEEPS_UP_CATCH_UP_S = 60.0
# Runs of every job share the kind "run" (an ingest run, a training run with torch loaded): the largest of them at
# each sample follows which jobs run, not a leak, so its fit is reported but left out of the headline maximum.
LONG_LIVED = ("dagster dev", "daemon", "code server", "webserver", "run launcher")
_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    seconds = parse_duration
    parser.add_argument(
        "--duration", type=seconds, default=1800.0, help="Producing time (30m; 10m, 90s, 1h)."
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="Events per second.")
    parser.add_argument(
        "--broker-restart-every", type=seconds, default=300.0, help="Broker restart period (5m; 0: never)."
    )
    parser.add_argument("--broker-stop", choices=["alternate", "kill", "term"], default="alternate")
    parser.add_argument(
        "--drift-at", type=seconds, default=None, help="Drift point (default: half the duration)."
    )
    parser.add_argument("--bad-ratio", type=float, default=0.02, help="Share of malformed records.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spec", default="clickstream", help="Bundled spec name or YAML path to copy.")
    parser.add_argument("--sample-every", type=seconds, default=5.0, help="/proc and lag sampling period.")
    parser.add_argument("--progress-every", type=seconds, default=30.0, help="Progress line period.")
    parser.add_argument("--catch-up-timeout", type=seconds, default=600.0, help="Wait for the lake after.")
    parser.add_argument(
        "--keep", action="store_true", help="Keep the work folder (logs, lake, DAGSTER_HOME)."
    )
    args = parser.parse_args()
    if args.drift_at is None:
        args.drift_at = args.duration / 2
    return args


# --- what runs ------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One look at the system: seconds since the producer started, memory and descriptors per kind of process,
    and the offsets (sums over partitions) Kafka ends at (None while the broker is down) and the lake holds."""

    t: float
    kinds: dict[str, dict[str, int]]
    end: int | None
    committed: int

    @property
    def lag(self) -> int | None:
        return None if self.end is None else max(0, self.end - self.committed)


@dataclass
class Soak:
    """Everything started, so that one ``stop`` ends all of it."""

    args: argparse.Namespace
    work: Path
    broker: LocalKafkaConfig
    settings: KafkaSettings
    spec_path: Path
    lake: LakeLocation
    home: Path
    port: int
    pipeline: str
    partitions: list[int]
    dagster: subprocess.Popen | None = None
    producer: subprocess.Popen | None = None
    producer_runs: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[int, tuple[str, str]] = field(default_factory=dict)
    """pid -> (start time, kind) of every process seen under ``dagster dev`` (the start time guards against pid
    reuse)."""
    samples: list[Sample] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    restart_thread: threading.Thread | None = None
    restart_error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "RT_TRAINING_LAKE": self.lake.root,
            SPEC_ENV_VAR: str(self.spec_path),
            BOOTSTRAP_ENV_VAR: self.settings.bootstrap_servers,
        }
        for name, value in TICK_TIMEOUT_ENV.items():
            env.setdefault(name, value)
        return env

    def stop(self) -> None:
        """Stop the producer, Dagster (its runs canceled first) and the broker; then SIGKILL, by pid, any process
        seen under ``dagster dev`` that is still alive."""
        if self.producer is not None:
            _stop(self.producer, "producer", signal.SIGTERM, timeout=30.0)
        if self.dagster is not None and self.dagster.poll() is None:
            cancel_runs_in_flight(self.url)
            _stop(self.dagster, "dagster dev", signal.SIGINT, timeout=60.0)
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            alive = [pid for pid, (start, _) in self.seen.items() if process_alive(pid, start)]
            if not alive:
                break
            left = ", ".join(f"{pid} ({self.seen[pid][1]})" for pid in alive)
            say(f"stopping {len(alive)} process(es) left from dagster dev with {sig.name}: {left}")
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(process_alive(p, self.seen[p][0]) for p in alive):
                time.sleep(0.2)
        if self.restart_thread is not None:
            self.restart_thread.join()
        if stop_broker(self.broker) is not None:
            say("stopped the Kafka broker")


def prepare(args: argparse.Namespace, work: Path) -> Soak:
    """The folders, the spec copy and the broker (started, topic created)."""
    import yaml

    from rt_training.spec import resolve_spec_path

    home = work / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    document = yaml.safe_load(resolve_spec_path(args.spec).read_text())
    document["source"]["topic"] = TOPIC
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(document, sort_keys=False))
    # A restart on a loaded machine can take a minute; the soak would rather wait than lose its broker.
    broker = LocalKafkaConfig(data_dir=work / "kafka", port=free_port(), start_timeout_s=300.0)
    say(f"starting the Kafka broker in {broker.data_dir}")
    status = start_broker(broker)
    settings = KafkaSettings(bootstrap_servers=status.bootstrap_servers)
    spec = load_spec(str(spec_path))
    lake = LakeLocation(str(work / "lake"))
    partitions, _ = ensure_topic(settings, spec, TOPIC, None)
    soak = Soak(
        args, work, broker, settings, spec_path, lake, home, free_port(), spec.name, list(range(partitions))
    )
    say(
        f"Kafka at {status.bootstrap_servers} (pid {status.state.pid}), topic {TOPIC!r} with {partitions} partitions"
    )
    return soak


def start_dagster(soak: Soak) -> None:
    """``dagster dev`` as the demo starts it, then wait until the ingest sensor has ticked once."""
    from dagster import DagsterInstance
    from dagster._core.definitions.run_request import InstigatorType

    command = [
        str(BIN / "dagster"),
        "dev",
        "-w",
        str(REPO / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(soak.port),
    ]
    with (soak.work / "dagster.log").open("wb") as log:
        soak.dagster = subprocess.Popen(
            command, env=soak.env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    say(f"dagster dev started (pid {soak.dagster.pid}), UI {soak.url}; log {soak.work / 'dagster.log'}")
    t0 = time.monotonic()
    with DagsterInstance.from_config(str(soak.home)) as instance:
        while time.monotonic() - t0 < 300.0:
            if soak.dagster.poll() is not None:
                raise RuntimeError(
                    f"dagster dev exited with {soak.dagster.returncode}; see {soak.work / 'dagster.log'}"
                )
            sample_processes(soak)
            for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
                if state.instigator_name.endswith("kafka_offsets_sensor") and instance.get_ticks(
                    state.instigator_origin_id, state.selector_id, limit=1
                ):
                    say(f"the ingest sensor ticked {time.monotonic() - t0:.0f}s after dagster dev started")
                    return
            time.sleep(2.0)
    raise RuntimeError(f"the ingest sensor did not tick within 300s; see {soak.work / 'dagster.log'}")


def start_producer(soak: Soak, started_s: float) -> None:
    """The producer for the time left after ``started_s`` seconds of producing, drift at the same wall time."""
    args = soak.args
    n = len(soak.producer_runs)
    log = soak.work / f"producer-{n}.log"
    command = [
        str(BIN / "rt-training"), "produce", "--spec", str(soak.spec_path), "--topic", TOPIC,
        "--rate", f"{args.rate:g}", "--duration", f"{args.duration - started_s:.1f}", "--seed", str(args.seed + n),
        "--drift-at", f"{max(0.0, args.drift_at - started_s):.1f}", "--bad-ratio", f"{args.bad_ratio:g}",
        "--bootstrap-servers", soak.settings.bootstrap_servers, "--progress-every", "60",
    ]  # fmt: skip
    with log.open("wb") as fh:
        soak.producer = subprocess.Popen(
            command, env=soak.env(), cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    soak.producer_runs.append({"seed": args.seed + n, "started_s": round(started_s, 1), "log": str(log)})
    say(f"producer started (pid {soak.producer.pid}): {shlex.join(command[1:])}")


def producer_finished(soak: Soak, t: float) -> None:
    """Record how the producer ended: its exit code and the events it says the cluster acknowledged."""
    run = soak.producer_runs[-1]
    assert soak.producer is not None
    text = Path(run["log"]).read_text(errors="replace")
    acknowledged = re.findall(r"^produced ([\d,]+) events", text, flags=re.MULTILINE)
    run.update(
        ended_s=round(t, 1),
        exit_code=soak.producer.returncode,
        acknowledged=int(acknowledged[-1].replace(",", "")) if acknowledged else None,
        last_lines=text.strip().splitlines()[-3:],
    )


# --- sampling -------------------------------------------------------------------------------------------------


def sample_processes(soak: Soak) -> dict[str, dict[str, int]]:
    """Resident memory, open descriptors and count per kind of process under ``dagster dev`` (from /proc)."""
    assert soak.dagster is not None
    tree: dict[int, tuple[int, str]] = {}
    starts: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := process_stat(int(entry.name))) is not None:
            pid = int(entry.name)
            tree[pid] = (int(fields[1]), "")
            starts[pid] = fields[19]
    under = _descendants(tree, soak.dagster.pid)
    for pid in under:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            raw = b""
        tree[pid] = (tree[pid][0], raw.replace(b"\0", b" ").decode(errors="replace"))
    kinds = process_kinds({pid: tree[pid] for pid in under}, soak.dagster.pid)
    out: dict[str, dict[str, int]] = {}
    for pid, kind in kinds.items():
        try:
            rss = rss_bytes(pid)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue  # exited meanwhile
        soak.seen.setdefault(pid, (starts[pid], kind))
        row = out.setdefault(kind, {"rss": 0, "fds": 0, "processes": 0, "rss_largest": 0})
        row["rss"] += rss
        row["fds"] += fds
        row["processes"] += 1
        row["rss_largest"] = max(row["rss_largest"], rss)
    return out


def _descendants(tree: dict[int, tuple[int, str]], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in tree.items():
        children.setdefault(parent, []).append(pid)
    out, todo = [], [root] if root in tree else []
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def lake_committed(soak: Soak, partitions: list[int]) -> dict[int, int]:
    """Partition -> the offset all three offset tables have committed up to (the least of the three)."""
    name = soak.pipeline
    out = dict.fromkeys(partitions, 2**63)
    for table in OFFSET_TABLES:
        done = committed_offsets(soak.lake.uri(name, table), name, TOPIC, partitions)
        for p in partitions:
            out[p] = min(out[p], done[p] or 0)
    return out


def kafka_bounds(soak: Soak) -> dict[int, tuple[int, int]] | None:
    """Partition -> (earliest, end) from the broker, or None while it does not answer."""
    try:
        return dict(
            partition_offsets(
                KafkaSettings(bootstrap_servers=soak.settings.bootstrap_servers, **PROBE), TOPIC
            )
        )
    except (KafkaConnectionProblem, KafkaError, LookupError):  # down, or its metadata not loaded yet
        return None


def take_sample(soak: Soak, t: float, partitions: list[int]) -> Sample:
    bounds = kafka_bounds(soak)
    sample = Sample(
        t=round(t, 1),
        kinds=sample_processes(soak),
        end=None if bounds is None else sum(end for _, end in bounds.values()),
        committed=sum(lake_committed(soak, partitions).values()),
    )
    soak.samples.append(sample)
    return sample


# --- broker restarts ------------------------------------------------------------------------------------------


def restart_broker(soak: Soak, n: int, how: str, t: float) -> None:
    """Stop the broker (SIGKILL or a clean stop) and start it again on the same port and data folder; runs in a
    thread so that sampling goes on while the broker is away."""
    record: dict[str, Any] = {"n": n, "how": how, "at_s": round(t, 1)}
    soak.restarts.append(record)
    t_stop = time.monotonic()
    try:
        record["committed_before"] = sum(lake_committed(soak, soak.partitions).values())
        if how == "kill":
            status = broker_status(soak.broker)
            if status.state is None:
                raise RuntimeError(f"no broker runs from {soak.broker.data_dir}: nothing to SIGKILL")
            os.kill(status.state.pid, signal.SIGKILL)
            while process_alive(status.state.pid):
                time.sleep(0.05)
        else:
            stop_broker(soak.broker)
        record["stopped_in_s"] = round(time.monotonic() - t_stop, 1)
        start_broker(soak.broker)
        record["down_s"] = round(time.monotonic() - t_stop, 1)
        record["back_at_s"] = round(t + record["down_s"], 1)
        bounds = kafka_bounds(soak)
        record["end_when_back"] = None if bounds is None else sum(end for _, end in bounds.values())
    except BaseException as exc:  # reported by the main loop
        soak.restart_error = exc


def restart_recoveries(soak: Soak) -> list[dict[str, Any]]:
    """Each restart with the seconds from the broker's return to the lake's next commit and to its catching up
    with the end offsets Kafka had then."""
    points = [(s.t, s.committed) for s in soak.samples]
    out = []
    for r in soak.restarts:
        back = r.get("back_at_s")
        done = dict(r)
        if back is not None:
            done["first_commit_after_s"] = recovery_seconds(points, back, r["committed_before"] + 1)
            if r.get("end_when_back") is not None:
                done["caught_up_after_s"] = recovery_seconds(points, back, r["end_when_back"])
        out.append(done)
    return out


# --- the run --------------------------------------------------------------------------------------------------


def run(soak: Soak) -> dict[str, Any]:
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    args = soak.args
    start_dagster(soak)
    partitions = soak.partitions
    t0 = time.monotonic()
    start_producer(soak, 0.0)
    every = args.broker_restart_every
    next_restart = every if every > 0 else float("inf")
    next_progress = args.progress_every
    with DagsterInstance.from_config(str(soak.home)) as instance:
        while True:
            t = time.monotonic() - t0
            if soak.dagster.poll() is not None:
                raise RuntimeError(
                    f"dagster dev exited with {soak.dagster.returncode}; see {soak.work / 'dagster.log'}"
                )
            if soak.restart_error is not None:
                raise RuntimeError(f"broker restart {len(soak.restarts)} failed: {soak.restart_error}")
            assert soak.producer is not None
            if soak.producer.poll() is not None:
                producer_finished(soak, t)
                if t >= args.duration - 1.0 or soak.producer.returncode == 0:
                    break
                say(
                    f"the producer failed (exit {soak.producer.returncode}): {soak.producer_runs[-1]['last_lines']}"
                )
                start_producer(soak, t)
            if (
                t >= next_restart
                and t < args.duration
                and (soak.restart_thread is None or not soak.restart_thread.is_alive())
            ):
                n = len(soak.restarts) + 1
                how = {"kill": "kill", "term": "term"}.get(args.broker_stop, "kill" if n % 2 else "term")
                say(f"broker restart {n}: {'SIGKILL' if how == 'kill' else 'clean stop'}, then start")
                soak.restart_thread = threading.Thread(
                    target=restart_broker, args=(soak, n, how, t), daemon=True
                )
                soak.restart_thread.start()
                next_restart += every
            sample = take_sample(soak, t, partitions)
            if t >= next_progress:
                progress(soak, sample, instance, "producing")
                next_progress += args.progress_every
            time.sleep(max(0.0, args.sample_every - (time.monotonic() - t0 - t)))
        produced_s = time.monotonic() - t0
        say(f"producer done after {produced_s:.0f}s; waiting for the lake to catch up")
        if soak.restart_thread is not None:
            soak.restart_thread.join()
        lag_at_end = take_sample(soak, produced_s, partitions).lag
        caught_up_s = None
        while time.monotonic() - t0 - produced_s < args.catch_up_timeout:
            sample = take_sample(soak, time.monotonic() - t0, partitions)
            if sample.lag == 0:
                caught_up_s = round(sample.t - produced_s, 1)
                break
            if sample.t >= next_progress:
                progress(soak, sample, instance, "catching up")
                next_progress += args.progress_every
            time.sleep(args.sample_every)
        last = soak.samples[-1]
        say(f"lake {'caught up' if caught_up_s is not None else 'did NOT catch up'}: lag {last.lag}")
        bounds = kafka_bounds(soak)
        if bounds is None:
            raise RuntimeError("the broker did not answer after the producer stopped")
        failed_live = instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
    soak.stop()
    result = report(soak, produced_s, bounds, lag_at_end, caught_up_s)
    result["failed_runs_before_shutdown"] = failed_live
    return result


def progress(soak: Soak, sample: Sample, instance: Any, phase: str) -> None:
    from dagster import DagsterRunStatus, RunsFilter

    failed = instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
    done = instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    lags = [s.lag for s in soak.samples if s.lag is not None]
    memory = ", ".join(f"{kind} {row['rss'] / 2**20:.0f}" for kind, row in sorted(sample.kinds.items()))
    produced = (
        "broker down"
        if sample.end is None
        else f"{sample.end:,} in Kafka ({sample.end / max(sample.t, 1):,.0f}/s)"
    )
    say(
        f"{phase} {sample.t:.0f}s/{soak.args.duration:.0f}s: {produced}, lag "
        f"{'?' if sample.lag is None else f'{sample.lag:,}'} (max {max(lags, default=0):,}); runs ok {done}, "
        f"failed {failed}; broker restarts {len(soak.restarts)}; RSS MiB: {memory}; load {os.getloadavg()[0]:.1f}"
    )


# --- the report -----------------------------------------------------------------------------------------------


def table_offsets(uri: str, coords: tuple[str, str, str]) -> dict[int, np.ndarray]:
    """Partition -> offsets of the rows of the soak's topic in the table at ``uri``."""
    import pyarrow.dataset as ds

    dt = open_table(uri)
    if dt is None:
        return {}
    topic, partition, offset = coords
    rows = dt.to_pyarrow_dataset().to_table(columns=[partition, offset], filter=ds.field(topic) == TOPIC)
    parts = rows[partition].to_numpy()
    offsets = rows[offset].to_numpy()
    return {int(p): offsets[parts == p] for p in np.unique(parts)}


def reconciliation(soak: Soak, bounds: dict[int, tuple[int, int]]) -> dict[str, Any]:
    name = soak.pipeline
    offsets = {table: table_offsets(soak.lake.uri(name, table), COORDS[table]) for table in OFFSET_TABLES}
    bronze = reconcile(bounds, offsets["bronze"])
    cleaned = {
        p: np.concatenate(
            [
                offsets["silver"].get(p, np.empty(0, np.int64)),
                offsets["dead_letters"].get(p, np.empty(0, np.int64)),
            ]
        )
        for p in set(offsets["silver"]) | set(offsets["dead_letters"])
    }
    after_cleaning = reconcile(bounds, cleaned)
    return {
        "lost": bronze.lost + after_cleaning.lost,
        "duplicated": bronze.duplicated + bronze.outside + after_cleaning.duplicated + after_cleaning.outside,
        "bronze": {"rows": sum(len(v) for v in offsets["bronze"].values()), **vars(bronze)},
        "silver_and_dead_letters": {
            "silver_rows": sum(len(v) for v in offsets["silver"].values()),
            "dead_letter_rows": sum(len(v) for v in offsets["dead_letters"].values()),
            **vars(after_cleaning),
        },
    }


def runs_report(soak: Soak) -> dict[str, Any]:
    """Runs by job and status, and failed runs by cause (first line of the first step failure, else of the run
    failure), read from the instance once Dagster has stopped."""
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

    by_job: dict[str, dict[str, int]] = {}
    failures = []
    with DagsterInstance.from_config(str(soak.home)) as instance:
        for run in instance.get_runs():
            counts = by_job.setdefault(run.job_name, {})
            counts[run.status.value] = counts.get(run.status.value, 0) + 1
            if run.status == DagsterRunStatus.FAILURE:
                failures.append((run.job_name, _failure_message(instance, run.run_id, DagsterEventType)))
    return {
        "failed_runs": len(failures),
        "failed_runs_by_cause": failure_causes(failures),
        "runs_by_job": dict(sorted(by_job.items())),
    }


def _failure_message(instance: Any, run_id: str, event_types: Any) -> str:
    """The error of the run's first step failure (else of its run failure) that the run's code raised, not
    Dagster's wrapper around it nor the lower-level error it was raised from (:func:`_soak.user_error`)."""
    wanted = (event_types.STEP_FAILURE, event_types.RUN_FAILURE)
    events = [
        e.dagster_event
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type in wanted
    ]
    for event in sorted(events, key=lambda e: wanted.index(e.event_type)):
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return user_error(error).message
        if event.message:
            return event.message
    return "(no failure event)"


def memory_report(soak: Soak, produced_s: float) -> dict[str, Any]:
    """Per kind of process: peaks, growth over the second half of the producing phase and in each third of it."""
    kinds = sorted({kind for s in soak.samples for kind in s.kinds})
    out: dict[str, Any] = {}
    for kind in kinds:
        rows = [(s.t, s.kinds[kind]) for s in soak.samples if kind in s.kinds]
        late = [(t, row) for t, row in rows if produced_s / 2 <= t <= produced_s]
        memory_of = "rss_largest" if kind == "run" else "rss"
        out[kind] = {
            "peak_rss_bytes": max(row["rss"] for _, row in rows),
            "peak_process_rss_bytes": max(row["rss_largest"] for _, row in rows),
            "peak_fds": max(row["fds"] for _, row in rows),
            "peak_processes": max(row["processes"] for _, row in rows),
            "rss_growth_bytes_per_h": growth_per_hour(
                [t for t, _ in late], [row[memory_of] for _, row in late]
            ),
            "fd_growth_per_h": growth_per_hour([t for t, _ in late], [row["fds"] for _, row in late]),
            "rss_growth_bytes_per_h_by_third": growth_by_part(
                [t for t, _ in rows], [row[memory_of] for _, row in rows], 0.0, produced_s
            ),
            "timeline": [[t, row["rss"], row["fds"], row["processes"]] for t, row in rows],
        }
    return out


def report(
    soak: Soak,
    produced_s: float,
    bounds: dict[int, tuple[int, int]],
    lag_at_end: int | None,
    caught_up_s: float | None,
) -> dict[str, Any]:
    args = soak.args
    events = sum(end - earliest for earliest, end in bounds.values())
    acknowledged = [r.get("acknowledged") for r in soak.producer_runs]
    lags = [(s.t, s.lag) for s in soak.samples if s.lag is not None]
    late_lags = [(t, lag) for t, lag in lags if produced_s / 2 <= t <= produced_s]
    lag_growth = growth_per_hour([t for t, _ in late_lags], [lag for _, lag in late_lags])
    lag_growth_per_s = None if lag_growth is None else round(lag_growth / 3600, 2)
    rate = events / args.duration  # the producer sends for the time asked, at the rate asked if it can
    keeps_up = rate >= 0.95 * args.rate and caught_up_s is not None and caught_up_s <= KEEPS_UP_CATCH_UP_S
    memory = memory_report(soak, produced_s)
    growths = {
        k: v["rss_growth_bytes_per_h"] for k, v in memory.items() if v["rss_growth_bytes_per_h"] is not None
    }
    checks = reconciliation(soak, bounds)
    runs = runs_report(soak)
    verdict = [
        f"produced {events:,} events: {rate:,.0f}/s over the {args.duration:g}s asked, of {args.rate:g}/s asked",
        "ingestion kept up"
        if keeps_up
        else f"ingestion did NOT keep up on this machine (lag grew {lag_growth_per_s} events/s over the second "
        f"half; caught up {caught_up_s}s after the producer stopped)",
        f"lake {'caught up' if caught_up_s is not None else 'did NOT catch up'} after the producer stopped",
        f"lost {checks['lost']}, duplicated {checks['duplicated']}",
    ]
    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "settings": {
            "target_duration_s": args.duration,
            "rate": args.rate,
            "broker_restart_every_s": args.broker_restart_every,
            "broker_stop": args.broker_stop,
            "drift_at_s": args.drift_at,
            "bad_ratio": args.bad_ratio,
            "spec": args.spec,
            "partitions": len(bounds),
            "sample_every_s": args.sample_every,
        },
        "verdict": verdict,
        "duration_s": round(produced_s, 1),
        "events": events,
        "producer_acknowledged": None if None in acknowledged else sum(acknowledged),
        "rate_achieved": round(rate, 1),
        "keeps_up": keeps_up,
        "lag_growth_per_s_second_half": lag_growth_per_s,
        "lost": checks["lost"],
        "duplicated": checks["duplicated"],
        "reconciliation": checks,
        "caught_up": caught_up_s is not None,
        "catch_up_s": caught_up_s,
        **runs,
        "max_lag": max((lag for _, lag in lags), default=None),
        "lag_at_end": lag_at_end,
        "lag_after_catch_up": soak.samples[-1].lag,
        "lag_timeline": [[t, lag] for t, lag in lags],
        "rss_growth_bytes_per_h": max((growths[k] for k in LONG_LIVED if k in growths), default=None),
        "rss_growth_bytes_per_h_by_kind": growths,
        "fd_growth_per_h_by_kind": {k: v["fd_growth_per_h"] for k, v in memory.items()},
        "peak_rss_bytes_by_kind": {k: v["peak_rss_bytes"] for k, v in memory.items()},
        "peak_fds_by_kind": {k: v["peak_fds"] for k, v in memory.items()},
        "processes": memory,
        "broker_restarts": restart_recoveries(soak),
        "producer_runs": soak.producer_runs,
    }


def main() -> None:
    args = parse_args()
    # Ctrl-C and `kill` both stop everything started here (a shell that backgrounds this makes it ignore SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    if os.environ.pop(BOOTSTRAP_ENV_VAR, None):
        say(f"{BOOTSTRAP_ENV_VAR} is ignored: the soak starts and restarts its own broker")
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    say(f"work folder {work}")
    keep = args.keep
    soak = None
    try:
        soak = prepare(args, work)
        result = run(soak)
    except KeyboardInterrupt as exc:
        say(f"{exc.args[0] if exc.args else 'Ctrl-C'} received: stopping everything; no result written")
        keep = True
        raise SystemExit(130) from None
    except BaseException:
        keep = True
        raise
    finally:
        if soak is not None:
            soak.stop()
        else:
            stop_broker(LocalKafkaConfig(data_dir=work / "kafka"))
        if keep:
            say(f"kept the work folder {work} (logs, lake, DAGSTER_HOME)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    path = write_result("soak", result)
    for line in result["verdict"]:
        say(line)
    say(f"wrote {path}")


if __name__ == "__main__":
    main()
