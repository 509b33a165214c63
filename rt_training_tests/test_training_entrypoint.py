"""The training entry point run for real: under torchrun with two CPU ranks (gloo), and via Dagster Pipes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import write_deltalake

from rt_training.spec import load_spec
from rt_training.training.checkpoints import load_checkpoint, restore_model, state_digest
from rt_training.training.entrypoint import main, read_config, run_job
from rt_training.training.teacher import LinearTeacher

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def job(tmp_path):
    """A small training set (version 0), a holdout window in a silver-like table, and a job config."""
    spec = load_spec()
    teacher = LinearTeacher(spec, seed=3)
    write_deltalake(str(tmp_path / "training_set"), teacher.table(2000, seed=1))
    write_deltalake(str(tmp_path / "silver"), teacher.table(3000, seed=2))  # times 2025-01-01 00:00 to 00:05
    config = {
        "training_set": {"uri": str(tmp_path / "training_set"), "version": 0},
        "holdout": {"uri": str(tmp_path / "silver"), "after": "2025-01-01T00:03:19.95Z"},  # last 1,000 rows
        "output_dir": str(tmp_path / "checkpoints"),
        "result_path": str(tmp_path / "result.json"),
        "lineage": {"silver_versions": {"silver": 0}},
        "log_every": 2,
        "threads": 1,
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(config))
    return spec, path, tmp_path


def run(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_torchrun_two_ranks_train_in_sync_and_write_one_checkpoint(job):
    spec, config, tmp = job
    proc = run(
        [
            str(VENV_BIN / "torchrun"),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "rt_training.training.entrypoint",
            "--config",
            str(config),
        ],
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 rank(s) on cpu" in proc.stdout
    assert "samples/s" in proc.stdout

    result = json.loads((tmp / "result.json").read_text())
    assert result["world_size"] == 2
    digests = result["param_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    checkpoints = list((tmp / "checkpoints").glob("*.pt"))
    assert [p.name for p in checkpoints] == [f"{result['checkpoint']['id']}.pt"]

    payload = load_checkpoint(checkpoints[0])
    assert state_digest(restore_model(payload, spec).model) == digests[0]
    lineage = payload["lineage"]
    assert lineage["training_set_version"] == 0 and lineage["silver_versions"] == {"silver": 0}
    assert lineage["spec_fingerprint"] == spec.fingerprint()
    assert lineage["code_version"]["package"] == "0.1.0"
    gate = result["gate"]
    assert gate["holdout_rows"] == 1000 and gate["promote"] and gate["candidate_metric"] > 0.7
    # The first champion is held to the trivial baseline (AUC 0.5) with a paired bootstrap CI of its gain.
    assert gate["baseline_metric"] == 0.5 and gate["holdout_span_s"] == pytest.approx(99.9)
    assert gate["ci_versus"] == "baseline" and gate["ci_samples"] == 200 and gate["ci_confidence"] == 0.95
    assert 0.01 < gate["ci_low"] < gate["candidate_metric"] - 0.5 < gate["ci_high"]
    assert "trivial baseline 0.5" in gate["reason"] and "95% CI of the gain" in gate["reason"]
    assert result["metrics"]["holdout_auc"] == gate["candidate_metric"]
    assert result["metrics"]["holdout_baseline_auc"] == 0.5
    # 1,800 training rows, global batch 512 = 256 per rank: 900 rows per rank -> 4 steps per epoch.
    assert result["train"]["steps"] == 4 * result["train"]["epochs"]


def test_bad_config_exits_with_a_clear_error(tmp_path, capsys):
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps({"training_set": {"uri": str(tmp_path / "none"), "version": 0}, "outdir": "x"})
    )
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"invalid job config {path}" in err
    assert "output_dir: Field required" in err and "outdir: Extra inputs are not permitted" in err

    path.write_text(
        json.dumps({"training_set": {"uri": str(tmp_path / "none"), "version": 0}, "output_dir": "x"})
    )
    assert main(["--config", str(path)]) == 2
    assert "no Delta table at" in capsys.readouterr().err


def test_warm_start_through_the_entry_point_and_dagster_pipes(job):
    """Launched by Dagster's PipesSubprocessClient: metrics arrive as materialization metadata."""
    import dagster as dg

    _, config_path, tmp = job
    champion = run_job(read_config(config_path))["checkpoint"]  # in this process: no Pipes, plain stdout

    config = json.loads(config_path.read_text())
    config["init_checkpoint"] = {"path": champion["path"], "sha256": champion["sha256"]}
    config["result_path"] = str(tmp / "result2.json")
    config_path.write_text(json.dumps(config))

    @dg.asset
    def model_checkpoint(
        context: dg.AssetExecutionContext, pipes_subprocess_client: dg.PipesSubprocessClient
    ):
        return pipes_subprocess_client.run(
            command=[sys.executable, "-m", "rt_training.training.entrypoint", "--config", str(config_path)],
            context=context,
            env={"OMP_NUM_THREADS": "1"},
        ).get_materialize_result()

    outcome = dg.materialize(
        [model_checkpoint],
        resources={"pipes_subprocess_client": dg.PipesSubprocessClient(cwd=str(tmp))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert outcome.success
    (mat,) = outcome.asset_materializations_for_node("model_checkpoint")
    meta = {k: v.value for k, v in mat.metadata.items()}
    second = json.loads((tmp / "result2.json").read_text())
    assert meta["checkpoint_id"] == second["checkpoint"]["id"] != champion["id"]
    assert meta["sha256"] == second["checkpoint"]["sha256"]
    assert meta["auc"] == pytest.approx(second["metrics"]["auc"])
    assert meta["gate_reason"] == second["gate"]["reason"]
    assert "vs champion" in meta["gate_reason"]
    assert second["lineage"]["parent_checkpoint_id"] == champion["id"]
    assert len(list((tmp / "checkpoints").glob("*.pt"))) == 2
