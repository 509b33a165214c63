"""The code location: it loads, validates with Dagster's own CLI, and imports nothing heavy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from rt_training.defs.factory import build_definitions
from rt_training.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_the_demo_spec() -> None:
    from rt_training.definitions import defs

    assert isinstance(defs, dg.Definitions)
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"kafka/clickstream", "bronze_events", "silver_events", "dead_letters"} <= keys
    assert "ingest_job" in {j.name for j in repo.get_all_jobs()}
    assert "kafka_offsets_sensor" in {s.name for s in repo.sensor_defs}


def test_a_second_spec_builds_with_no_code_change(tmp_path: Path) -> None:
    spec = load_spec()
    other = spec.model_copy(
        update={"name": "other", "source": spec.source.model_copy(update={"topic": "t2"})}
    )
    repo = build_definitions(other).get_repository_def()
    assert dg.AssetKey(["kafka", "t2"]) in repo.asset_graph.get_all_asset_keys()


def test_dagster_definitions_validate_exits_zero(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home))
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


def test_loading_the_code_location_imports_nothing_heavy() -> None:
    code = (
        "import sys, rt_training.definitions; "
        "print(','.join(m for m in ('torch', 'evidently', 'tokenizers', 'deltalake', 'kafka', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == ""
