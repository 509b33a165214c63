"""The whole loop under the real Dagster daemon and webserver, observed through the GraphQL API.

A stream with a drift point flows into Kafka; with no manual step the sensors and schedules ingest it, update the
training set, train and promote a first champion, detect the drift, and launch a retraining. Screenshots of the
asset graph and of the drift report page are saved under ``rt_training_tests/artifacts/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from rt_training.cli.demo import cancel_runs_in_flight
from rt_training.ops.kafka_local import free_port
from rt_training.spec import load_spec
from rt_training_tests.dagster_ui import DagsterUI, dagster_dev, screenshot
from rt_training_tests.processes import stop_process

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def loop_spec(topic: str) -> dict:
    """The demo spec, tuned so one loop fits in a few minutes on two cores."""
    spec = load_spec().model_dump(mode="json", by_alias=True)
    spec["source"]["topic"] = topic
    spec["ingest"].update(min_records=500, max_wait_s=5)
    spec["sampling"]["capacity"] = 20_000
    spec["training"].update(epochs=1, batch_size=256, holdout_window_s=60)
    spec["drift"].update(window_rows=1500, drift_share=0.3, cooldown_s=3600, quality_drop=1.0)
    return spec


def load_factor() -> float:
    """How much slower than a quiet machine this one runs now: the 1-minute load per core, from 1 to 3."""
    return min(3.0, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))


def wait_for(what: str, check, timeout_s: float, ui: DagsterUI, every_s: float = 5.0):
    """Poll ``check(ui)`` until it returns something truthy; ``timeout_s`` is for a quiet machine and is
    stretched by :func:`load_factor`. A poll the webserver does not answer is retried. On timeout the message
    names what was awaited, the time waited and the newest runs, so the summary shows the cause."""
    started = time.monotonic()
    budget_s = timeout_s * load_factor()
    last_error: Exception | None = None
    while time.monotonic() - started < budget_s:
        try:
            result = check(ui)
        except OSError as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(every_s)
    waited = time.monotonic() - started
    detail = f"; last poll error: {last_error!r}" if last_error is not None else ""
    pytest.fail(
        f"no {what} within {waited:.0f} s (load-scaled from {timeout_s:.0f} s); "
        f"last runs: {ui.describe_recent_runs()}{detail}",
        pytrace=False,
    )


def promoted(ui: DagsterUI):
    return [m for m in ui.materializations("champion_model") if m["metadata"].get("decision") == "promoted"]


def drifted(ui: DagsterUI):
    return [m for m in ui.materializations("drift_report") if m["metadata"].get("dataset_drift") is True]


def retraining_runs(ui: DagsterUI):
    return [
        r
        for r in ui.runs("retraining_job")
        if any(t["key"] == "rt_training/trigger_reason" for t in r["tags"])
    ]


# Above the sum of the waits below at the largest load factor (3 x 1,560 s), so a slow machine fails with the
# wait that ran out, never with pytest-timeout's stack dump.
@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_stream_to_champion_to_drift_to_retraining(kafka_broker, tmp_path: Path) -> None:
    topic = f"loop-{uuid.uuid4().hex[:8]}"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(loop_spec(topic)))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "RT_TRAINING_SPEC": str(spec_path),
        "RT_TRAINING_LAKE": str(tmp_path / "lake"),
    }
    producer_cmd = [
        str(Path(sys.executable).parent / "rt-training"), "produce", "--spec", str(spec_path),
        "--rate", "300", "--duration", "0", "--drift-at", "150", "--drift-strength", "2.5",
        "--bad-ratio", "0.01", "--seed", "21", "--bootstrap-servers", kafka_broker.bootstrap_servers,
    ]  # fmt: skip
    port = free_port()
    # The producer first: it creates the topic, which the offsets sensor's first tick expects.
    producer = subprocess.Popen(producer_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        with dagster_dev(tmp_path / "dagster_home", port, env, tmp_path / "dagster.log") as ui:
            try:
                first_ingest = wait_for(
                    "successful ingest run",
                    lambda u: [r for r in u.runs("ingest_job") if r["status"] == "SUCCESS"],
                    180,
                    ui,
                )[0]
                training_sets = wait_for(
                    "training set", lambda u: u.materializations("training_set"), 300, ui
                )
                champion = wait_for("promotion", promoted, 420, ui)[0]
                drift = wait_for("drift report with dataset drift", drifted, 420, ui)[0]
                retraining = wait_for("retraining run", retraining_runs, 240, ui)[0]
            finally:
                stop_process(producer, "rt-training produce", timeout_s=15)
            # What the demo does on Ctrl-C: runs in flight (the retraining run, just launched, unless it finished
            # already) end canceled rather than failed.
            canceled = cancel_runs_in_flight(ui.url)
            statuses = {r["runId"]: r["status"] for r in ui.recent_runs(100)}
            # A run the termination reached ends CANCELED; one that finished first keeps its SUCCESS.
            reached = runs_termination_reached(tmp_path / "dagster_home", canceled)
            assert {r: statuses[r] for r in canceled} == {
                r: "CANCELED" if r in reached else "SUCCESS" for r in canceled
            }, statuses
            retraining_id = retraining["runId"]
            assert statuses[retraining_id] == ("CANCELED" if retraining_id in reached else "SUCCESS"), (
                statuses
            )
            # In that order.
            assert first_ingest["endTime"] <= training_sets[0]["timestamp"] <= champion["timestamp"]
            assert champion["timestamp"] <= drift["timestamp"] <= retraining["creationTime"]
            tags = {t["key"]: t["value"] for t in retraining["tags"]}
            assert "dataset drift" in tags["rt_training/trigger_reason"]
            assert tags["rt_training/drift_report"]
            assert drift["metadata"]["drift_share"] >= loop_spec(topic)["drift"]["drift_share"]
            # The pages a person looks at (the first-visit newsletter dialog dismissed, as a person would).
            ui.graphql("mutation { setNuxSeen }")
            screenshot(f"{ui.url}/asset-groups", ARTIFACTS / "asset_graph.png")
            screenshot(f"{ui.url}/assets/drift_report", ARTIFACTS / "drift_report.png")
            for name in ("asset_graph.png", "drift_report.png"):
                assert (ARTIFACTS / name).stat().st_size > 10_000, name
    finally:
        stop_process(producer, "rt-training produce", timeout_s=15)  # when dagster dev did not start


def runs_termination_reached(home: Path, run_ids: set[str]) -> set[str]:
    """The runs of ``run_ids`` that Dagster reported as canceling (a termination request reached them)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return {r for r in run_ids if instance.all_logs(r, of_type=dg.DagsterEventType.RUN_CANCELING)}
