"""``rt-training demo``: the whole loop on one machine — Kafka, the producer and the Dagster UI.

Starts, in order: the local KRaft broker (unless ``--bootstrap-servers`` or ``KAFKA_BOOTSTRAP_SERVERS`` names a
cluster, reached with the settings of the Kafka flags and ``KAFKA_*`` variables), the producer
(``rt-training produce``: the synthetic stream with a drift point, or with ``--from`` a user's own records, event
times as given), and ``dagster dev`` on 127.0.0.1:3000 with the sensors on. Ctrl-C first cancels the runs in
flight through the webserver's GraphQL API (so the UI shows them canceled, not failed), then stops what this
command started, in reverse order, and nothing else. A producer that has sent all of a file exits and the rest
runs on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from rt_training.cli.kafka_options import KafkaFlags, kafka_options
from rt_training.spec import SPEC_ENV_VAR, SpecError, resolve_spec_path

# Runs get this long to stop on their own after a cancel request; what is still running is then marked canceled.
CANCEL_WAIT_S = 8.0
# Dagster gives a sensor or schedule tick 60 s to answer; while the code location still imports its libraries on a
# busy machine the first ticks take longer and the daemon logs "Unable to reach the user code server" tracebacks.
# Users can set these variables themselves; the demo only raises the defaults.
TICK_TIMEOUT_ENV = {
    "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": "180",
    "DAGSTER_SCHEDULE_GRPC_TIMEOUT_SECONDS": "180",
}
IN_FLIGHT = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
IN_FLIGHT_QUERY = """query($statuses: [RunStatus!]) { runsOrError(filter: {statuses: $statuses}) {
    ... on Runs { results { runId status } } } }"""
TERMINATE_MUTATION = """mutation($ids: [String!]!, $policy: TerminateRunPolicy) {
    terminateRuns(runIds: $ids, terminatePolicy: $policy) { __typename } }"""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop(proc: subprocess.Popen, name: str, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
    """Signal the process group we started for ``proc`` and wait; escalate to SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    click.echo(f"demo: stopping {name} (pid {proc.pid})")
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def graphql(url: str, query: str, variables: Mapping[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    """POST ``query`` to the Dagster webserver at ``url``; its ``data``, or RuntimeError naming its errors."""
    body = json.dumps({"query": query, "variables": dict(variables)}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


def runs_in_flight(url: str) -> dict[str, str]:
    """Run id -> status of the runs not yet finished."""
    data = graphql(url, IN_FLIGHT_QUERY, {"statuses": IN_FLIGHT})
    return {r["runId"]: r["status"] for r in data["runsOrError"]["results"]}


def _terminate(url: str, run_ids: list[str], policy: str) -> None:
    graphql(url, TERMINATE_MUTATION, {"ids": run_ids, "policy": policy})


def cancel_runs_in_flight(url: str) -> set[str]:
    """Ask the webserver at ``url`` to cancel every run in flight (and any a sensor launches meanwhile), wait up
    to :data:`CANCEL_WAIT_S` for them to stop, and mark those still going as canceled; returns the ids of the
    runs it canceled. Best effort: a webserver that does not answer is reported and the demo stops anyway."""
    asked: set[str] = set()
    deadline = time.monotonic() + CANCEL_WAIT_S
    problem: Exception | None = None
    runs: dict[str, str] | None = None
    while time.monotonic() < deadline:
        try:
            runs = runs_in_flight(url)
            if not runs:
                break
            if not asked:
                click.echo(f"demo: canceling {len(runs)} run(s) in flight")
            # Asked again while not CANCELING: Dagster refuses to terminate a run whose process is still being
            # started (the launcher has no pid to signal yet), and such a run would otherwise finish untouched.
            pending = [r for r, status in runs.items() if status != "CANCELING"]
            if pending:
                _terminate(url, pending, "SAFE_TERMINATE")
            asked |= set(runs)
            problem = None
        except (OSError, RuntimeError, KeyError) as exc:
            problem = exc
            if runs is None:  # the webserver never answered: nothing to wait for
                break
        time.sleep(0.5)  # after a failed request, the next poll tries again
    try:
        if runs:
            _terminate(url, list(runs), "MARK_AS_CANCELED_IMMEDIATELY")
            asked |= set(runs)
            click.echo(
                f"demo: marked {len(runs)} run(s) canceled that had not stopped within {CANCEL_WAIT_S:g}s"
            )
    except (OSError, RuntimeError, KeyError) as exc:
        problem = exc
    if problem is not None:
        click.echo(
            f"demo: could not cancel the runs in flight through {url} ({problem!r}); stopping anyway",
            err=True,
        )
    return asked


@click.command()
@click.option("--port", default=3000, show_default=True, help="Port of the Dagster UI.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=None,
    help="Events per second (default: 200 synthetic events/s; with --from, as fast as Kafka takes them).",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Send this JSON-lines or CSV file of your own records (event times as given) instead of the "
    "synthetic stream; bad lines are skipped and reported (they would be dead letters anyway).",
)
@click.option(
    "--drift-after", default=600, show_default=True, help="Seconds until the producer injects drift."
)
@click.option("--bad-ratio", default=0.02, show_default=True, help="Share of malformed records.")
@click.option(
    "--home", type=click.Path(file_okay=False), default=None, help="DAGSTER_HOME (default .dagster_home)."
)
@click.option(
    "--spec",
    "spec_path",
    default=None,
    help=f"Pipeline spec: a YAML path or a bundled name such as news (default ${SPEC_ENV_VAR} or clickstream).",
)
@kafka_options
def demo(
    port: int,
    rate: float | None,
    from_file: str | None,
    drift_after: int,
    bad_ratio: float,
    home: str | None,
    spec_path: str | None,
    kafka_flags: KafkaFlags,
) -> None:
    """Run Kafka, the producer and Dagster (UI on 127.0.0.1:PORT, sensors on) until Ctrl-C."""
    from rt_training.ops import kafka_local
    from rt_training.stream.client import BOOTSTRAP_ENV_VAR, KafkaConnectionProblem

    settings = kafka_flags.settings()

    # Ctrl-C and `kill` both stop everything started here. A shell that starts this in the background makes it
    # ignore SIGINT, and the processes it starts would inherit that; restore the default for them and for us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)

    root = _repo_root()
    dagster_home = Path(home or root / ".dagster_home").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "dagster.yaml", dagster_home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home))
    env.setdefault("RT_TRAINING_LAKE", str(root / ".data" / "lake"))
    for name, value in TICK_TIMEOUT_ENV.items():
        env.setdefault(name, value)
    if spec_path:
        try:
            env[SPEC_ENV_VAR] = str(resolve_spec_path(spec_path).resolve())
        except SpecError as exc:
            raise click.ClickException(str(exc)) from None

    kafka_config = kafka_local.LocalKafkaConfig(data_dir=root / ".data" / "kafka")
    started_kafka = False
    if kafka_flags.names_cluster:
        # The producer and dagster dev read the same settings, flags included, from their environment.
        env.update(settings.to_env())
        click.echo(
            f"demo: using the Kafka cluster at {settings.bootstrap_servers} ({settings.security_protocol})"
        )
    else:
        click.echo("demo: starting the local Kafka broker (the first start resolves its jars with Maven)")
        try:
            status = kafka_local.start_broker(kafka_config)
        except kafka_local.LocalKafkaError as exc:
            raise click.ClickException(str(exc)) from None
        started_kafka = status.kind == "started"
        env[BOOTSTRAP_ENV_VAR] = status.bootstrap_servers
        click.echo(f"demo: Kafka at {status.bootstrap_servers} ({status.kind}; log {kafka_config.log_file})")

    bin_dir = Path(sys.executable).parent
    procs: list[tuple[str, subprocess.Popen]] = []
    try:
        if from_file is None:
            rate = 200.0 if rate is None else rate
            command = ["produce", "--rate", f"{rate:g}", "--duration", "0", "--drift-at", str(drift_after),
                       "--bad-ratio", str(bad_ratio)]  # fmt: skip
            what = f"{rate:g} events/s, drift after {drift_after}s"
        else:
            rate = 0.0 if rate is None else rate
            command = ["produce", "--from", str(Path(from_file).resolve()), "--rate", f"{rate:g}",
                       "--on-bad-line", "skip"]  # fmt: skip
            what = f"the records of {from_file}" + (f" at {rate:g}/s" if rate else "")
        producer = subprocess.Popen([str(bin_dir / "rt-training"), *command], env=env, start_new_session=True)
        procs.append(("producer", producer))
        click.echo(f"demo: producer started (pid {producer.pid}), {what}")
        webserver = subprocess.Popen(
            [str(bin_dir / "dagster"), "dev", "-w", str(root / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            env=env, cwd=root, start_new_session=True,
        )  # fmt: skip
        procs.append(("dagster dev", webserver))
        click.echo(
            f"demo: dagster dev started (pid {webserver.pid}); DAGSTER_HOME={dagster_home}\n"
            f"demo: open http://127.0.0.1:{port} — Assets (lineage graph), Automation (sensors), Runs.\n"
            f"demo: lake tables under {env['RT_TRAINING_LAKE']}; metrics: `rt-training metrics serve`.\n"
            "demo: press Ctrl-C to stop everything this command started."
        )
        while all(p.poll() is None for _, p in procs):
            time.sleep(1)
            if from_file is not None and producer.poll() == 0:
                click.echo(f"demo: all records of {from_file} sent; the pipeline goes on (Ctrl-C stops it)")
                procs.remove(("producer", producer))
                from_file = None
        for name, p in procs:
            if p.poll() is not None:
                click.echo(f"demo: {name} exited with code {p.returncode}; stopping the rest", err=True)
    except KeyboardInterrupt as exc:
        click.echo(f"\ndemo: {exc.args[0] if exc.args else 'Ctrl-C'} received")
    except KafkaConnectionProblem as exc:
        click.echo(f"demo: {exc}", err=True)
    finally:
        if any(name == "dagster dev" and p.poll() is None for name, p in procs):
            cancel_runs_in_flight(f"http://127.0.0.1:{port}")
        for name, p in reversed(procs):
            _stop(p, name)
        if started_kafka:
            click.echo("demo: stopping Kafka")
            kafka_local.stop_broker(kafka_config)
        click.echo("demo: stopped")
