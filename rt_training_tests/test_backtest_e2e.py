"""``rt-training backtest`` end to end: a generated stream with a known drift point, the real broker, Delta lake,
sampler, drift report, trigger, training entry point and gate.

The stream: 24,000 events of the demo spec at 10 events/s of simulated event time starting in 2017 (years
before the wall clock), 1% bad records, drift (shifted features and a turned hidden model) 1,200 s after the
first event; steps of 300 s, so steps 1-4 are before the drift and 5-8 after it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from rt_training.backtest import BacktestConfig, run_backtest
from rt_training.spec import load_spec
from rt_training.spec.models import PipelineSpec
from rt_training.stream.client import KafkaSettings
from rt_training.stream.synthetic import EventGenerator, SimulatedClock

START_MS = 1_500_000_000_000
RATE = 10.0
EVENTS = 24_000
DRIFT_AT_S = 1200.0
STEP_S = 300.0
STEP_FIELDS = {
    "step", "start", "end", "rows", "label_share", "champion", "champion_metric", "static_metric",
    "periodic_metric", "drift", "retraining", "retraining_reason", "gate", "dead_letters", "late_rows",
    "seconds", "ingest_s", "score_s", "drift_s", "sampling_s", "training_s", "periodic_s",
}  # fmt: skip
SUMMARY_FIELDS = {
    "steps", "metric", "prequential_mean", "static_mean", "periodic_mean", "retrainings", "promotions",
    "wall_s", "events", "events_per_s", "dead_letters", "late_rows", "seconds_by_phase",
}  # fmt: skip


def small_spec() -> PipelineSpec:
    """The demo spec, sized for a 24k-event replay and set up to follow a drifting stream.

    ``time_biased`` sampling with a 5-minute (one step) half-life: the sample forgets old rows as event time
    moves on. With the demo's ``weighted`` strategy the drift policy's half-life only weighs the rows offered
    with it, and the members drawn before the drift keep their keys: measured on this stream (with a 2-minute
    holdout and 2 epochs), the training set of the retraining launched at step 5 held 395 post-drift rows of
    4,000 and the retrained champion beat the static model by 0.010 AUC after the drift. Here it holds 839 and
    beats it by 0.081. A 1-minute holdout lets the first champion train on step 1 (2,279 rows before the cut;
    it needs 2,048) and the step-5 retraining see 230 s of the drifted stream; 6 epochs of a 4,000-row sample
    are 48 optimizer steps.

    ``quality_drop`` is 0.1, not the demo's 0.05: the quality check compares the champion's AUC on its own
    ~700 held-out rows with its AUC on the next ~700 unseen rows, and two such windows of one distribution differ
    by a few hundredths by chance. Measured with fitted feature statistics: 0.7878 at promotion against 0.7157 at
    step 3, before the drift (a false alarm at 0.05), and 0.8159 against 0.6519 at step 5, after it.
    """
    spec = load_spec(str(resources.files("rt_training.specs").joinpath("clickstream.yaml")))
    return spec.model_copy(
        update={
            "sampling": spec.sampling.model_copy(
                update={"capacity": 4000, "strategy": "time_biased", "recency_half_life_s": 300.0}
            ),
            "training": spec.training.model_copy(update={"epochs": 6, "holdout_window_s": 60.0}),
            "drift": spec.drift.model_copy(
                update={
                    "window_rows": 1000,
                    "cooldown_s": 300.0,
                    "on_drift_recency_half_life_s": None,
                    "quality_drop": 0.1,
                }
            ),
        }
    )


def write_stream(path: Path, spec: PipelineSpec) -> Path:
    generator = EventGenerator(
        spec,
        11,
        clock=SimulatedClock(START_MS, RATE),
        drift_at=DRIFT_AT_S,
        drift_strength=1.5,
        bad_ratio=0.01,
    )
    path.write_bytes(b"\n".join(generator.generate(EVENTS).values) + b"\n")
    return path


@pytest.fixture(scope="module")
def backtest_run(kafka_broker: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    spec = small_spec()
    folder = tmp_path_factory.mktemp("backtest")
    events = write_stream(folder / "history.jsonl", spec)
    lines: list[str] = []
    result = run_backtest(
        spec,
        BacktestConfig(
            events=events,
            step_s=STEP_S,
            out_dir=folder / "out",
            kafka=kafka_broker,
            drift_at_s=START_MS / 1000 + DRIFT_AT_S,
        ),
        progress=lines.append,
    )
    return {"result": result, "lines": lines, "json": json.loads(result.json_path.read_text())}


def test_backtest_json_has_every_field(backtest_run: dict) -> None:
    doc = backtest_run["json"]
    assert doc["pipeline"] == "clickstream"
    assert set(doc["summary"]) >= SUMMARY_FIELDS
    assert doc["summary"]["steps"] == 8 and doc["summary"]["events"] == EVENTS
    assert doc["summary"]["metric"] == "auc"
    assert len(doc["steps"]) == 8
    for row in doc["steps"]:
        assert set(row) >= STEP_FIELDS
    assert [r["rows"] for r in doc["steps"]] == [3000] * 8
    assert sum(r["dead_letters"] + r["silver_rows"] for r in doc["steps"]) == EVENTS
    assert doc["summary"]["dead_letters"] > 0
    assert [r["start"][:19] for r in doc["steps"][:2]] == ["2017-07-14T02:40:00", "2017-07-14T02:45:00"]
    assert sum(line.startswith("step ") for line in backtest_run["lines"]) == 8
    plot = backtest_run["result"].plot_path
    assert plot.is_file() and plot.read_text().count("<polyline") == 3
    # The lake, checkpoints and broker data are removed unless keep_lake is set.
    assert not (backtest_run["result"].out_dir / "lake").exists()


def test_first_champion_and_baselines_are_scored_from_the_next_step(backtest_run: dict) -> None:
    rows = backtest_run["json"]["steps"]
    first = backtest_run["json"]["summary"]["first_champion_step"]
    assert first == 1
    assert rows[0]["champion_metric"] is None and rows[0]["periodic_metric"] is None
    for row in rows[1:]:
        assert row["champion_metric"] is not None
        assert row["static_metric"] is not None
        assert row["periodic_metric"] is not None


def test_retraining_fires_after_the_drift_and_not_before(backtest_run: dict) -> None:
    summary = backtest_run["json"]["summary"]
    assert summary["after_drift"]["steps"] == [5, 6, 7, 8]
    rows = backtest_run["json"]["steps"]
    assert [r["drift"] for r in rows[1:4]] == [False, False, False]
    assert summary["drift_steps"][:1] == [5]
    assert summary["retraining_steps"][:1] == [5], summary["retraining_steps"]
    assert rows[4]["trigger"] == "drift" and rows[4]["gate"] == "promoted"
    assert summary["promotions"] >= 1


def test_continual_training_beats_the_static_model_after_the_drift(backtest_run: dict) -> None:
    after = backtest_run["json"]["summary"]["after_drift"]
    # Measured: 0.6847 - 0.6035 = 0.081 (steps 5-8; at step 5 both are still the first champion, at steps 6-8
    # the retrained champion leads by 0.09-0.12). A run on a machine loaded by other test sessions gave 0.032:
    # the retraining differs there (floating-point sums of training under contention), the direction does not.
    assert after["prequential_mean"] - after["static_mean"] > 0.02
    rows = backtest_run["json"]["steps"]
    assert all(r["champion_metric"] > r["static_metric"] for r in rows[5:])


def test_cli_writes_the_report(kafka_broker: KafkaSettings, tmp_path: Path) -> None:
    from rt_training.cli.main import cli

    spec = small_spec()
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    generator = EventGenerator(spec, 5, clock=SimulatedClock(START_MS, RATE))
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(generator.generate(3000).values) + b"\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "backtest", str(spec_path), "--events", str(events), "--step-rows", "1500", "--out", str(out),
            "--bootstrap-servers", kafka_broker.bootstrap_servers, "--periodic-window", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "step 1/2" in result.output and "step 2/2" in result.output
    doc = json.loads((out / "backtest.json").read_text())
    assert doc["summary"]["steps"] == 2 and doc["summary"]["events"] == 3000
    assert doc["steps"][1]["periodic_metric"] is not None
    assert (out / "backtest.html").is_file()
