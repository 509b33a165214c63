"""Checkpoints on disk, the model registry (Delta), the validation gate, and lineage to the training set."""

import datetime as dt
import json

import pytest
import torch
from deltalake import DeltaTable, write_deltalake

from rt_training.features.state import fit_feature_state
from rt_training.spec import load_spec
from rt_training.training.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointCorruptError,
    CheckpointMissingError,
    Lineage,
    Restored,
    build_checkpoint,
    features_path,
    file_sha256,
    load_checkpoint,
    restore_model,
    save_checkpoint,
    sidecar_path,
    state_digest,
)
from rt_training.training.data import read_training_rows, read_training_table, tensors_from_arrow
from rt_training.training.gate import run_gate
from rt_training.training.loop import train
from rt_training.training.registry import Candidate, ModelRegistry, RegistryError
from rt_training.training.teacher import LinearTeacher

torch.set_num_threads(1)


def make_spec(**training):
    spec = load_spec()
    return spec.model_copy(update={"training": spec.training.model_copy(update=training)})


@pytest.fixture(scope="module")
def world():
    """A hidden model, its spec and three trained models of clearly different quality on the same task."""
    spec = make_spec(epochs=4, early_stopping_patience=4)
    teacher = LinearTeacher(spec, seed=3)
    rows = teacher.table(4000, seed=1)
    state = fit_feature_state(spec, rows, None, cold_start=True, seed=0)
    data = tensors_from_arrow(rows, spec, state)
    good = train(spec, state, *data.split(0.1, seed=0))
    weak = train(spec, state, *data.split(0.1, seed=0), max_steps=3)
    noise_spec = make_spec(epochs=2)
    noise_rows = LinearTeacher(spec, seed=4).table(2000, seed=1)  # another hidden model
    noise_state = fit_feature_state(spec, noise_rows, None, cold_start=True, seed=0)
    unrelated = train(
        noise_spec, noise_state, *tensors_from_arrow(noise_rows, spec, noise_state).split(0.1, seed=0)
    )
    holdout = teacher.table(2000, seed=50)
    return spec, teacher, {"good": good, "weak": weak, "unrelated": unrelated}, holdout


def save(result, spec, directory, checkpoint_id, lineage=None):
    payload = build_checkpoint(
        checkpoint_id=checkpoint_id,
        model=result.model,
        optimizer_state=result.optimizer_state,
        spec=spec,
        state=result.state,
        step=result.total_steps,
        epoch=result.epochs,
        metrics=result.metrics,
        lineage=lineage or Lineage(),
    )
    return save_checkpoint(payload, directory)


def flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checkpoint_round_trip_is_atomic_and_verified(world, tmp_path):
    spec, _, models, _ = world
    saved = save(models["good"], spec, tmp_path, "ckpt-a")
    path = tmp_path / "ckpt-a.pt"
    assert saved.path == str(path)
    # No temp files left; the feature state is its own artifact beside the checkpoint.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-a.features.json", "ckpt-a.json", "ckpt-a.pt"]
    assert saved.sha256 == file_sha256(path)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["sha256"] == saved.sha256
    assert (
        sidecar["feature_state"]["sha256"] == file_sha256(features_path(path)) == models["good"].state.sha256
    )

    payload = load_checkpoint(path)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["id"] == "ckpt-a"
    assert payload["model_args"]["model"]["hidden"] == [64, 32]
    assert payload["optimizer"]["param_groups"][0]["lr"] == spec.training.learning_rate
    restored = restore_model(payload, spec)
    assert state_digest(restored.model) == state_digest(models["good"].model)
    assert restored.state.to_json() == models["good"].state.to_json()


def test_flipped_byte_is_refused_before_loading(world, tmp_path):
    spec, _, models, _ = world
    saved = save(models["good"], spec, tmp_path, "ckpt-a")
    path = tmp_path / "ckpt-a.pt"
    flip_byte(path)
    with pytest.raises(CheckpointCorruptError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert saved.sha256 in message and file_sha256(path) in message
    with pytest.raises(CheckpointMissingError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_load_uses_weights_only(tmp_path):
    """A payload holding an arbitrary Python object (not tensors and plain containers) is refused."""
    payload = {"format": CHECKPOINT_FORMAT, "id": "odd", "when": dt.datetime(2025, 1, 1)}
    save_checkpoint(payload, tmp_path)
    with pytest.raises(CheckpointCorruptError, match="unreadable payload"):
        load_checkpoint(tmp_path / "odd.pt")


def test_registry_gate_promotion_rejection_rollback_and_fallback(world, tmp_path):
    spec, _, models, holdout = world
    registry = ModelRegistry.for_pipeline(tmp_path / "lake", spec.name)
    assert registry.champion() is None and registry.load_champion() is None
    ckpt_dir = tmp_path / "checkpoints"

    def offer(name):
        saved = save(models[name], spec, ckpt_dir, f"ckpt-{name}")
        registry.register(Candidate.from_saved(saved, "auc", models[name].metrics["auc"], {"name": name}))
        return saved

    def restored(name):
        return Restored(models[name].model, models[name].state)

    def gate_and_record(name, champion_name):
        champion = restored(champion_name) if champion_name else None
        decision = run_gate(spec, restored(name), champion, holdout)
        record = registry.promote if decision.promote else registry.reject
        record(f"ckpt-{name}", decision.reason, decision.candidate_metric, decision.champion_metric)
        return decision

    # 0. Too few held-out rows, or too short a span of event time: refused before any comparison.
    offer("weak")
    few = run_gate(spec, restored("weak"), None, holdout.slice(0, 150))
    assert not few.promote and "fewer than training.min_holdout_rows (200)" in few.reason
    short_spec = make_spec(min_holdout_span_s=300.0, holdout_window_s=600.0)
    short = run_gate(short_spec, restored("weak"), None, holdout)
    assert not short.promote and short.holdout_span_s == pytest.approx(199.9)
    assert "spans 199.9s of event time, less than training.min_holdout_span_s (5m)" in short.reason

    # 1. First candidate, no champion: promoted because it beats the trivial baseline (AUC 0.5) by the margin.
    first = gate_and_record("weak", None)
    assert first.promote and first.baseline_metric == 0.5 and first.ci_versus == "baseline"
    assert first.candidate_metric > 0.5 + spec.training.first_champion_margin and first.ci_low > 0
    assert registry.champion().checkpoint_id == "ckpt-weak"
    assert registry.history()[-1].lineage["metric_split"] == "holdout"

    # 2. A better candidate is promoted.
    good = offer("good")
    decision = gate_and_record("good", "weak")
    assert decision.promote and decision.candidate_metric > decision.champion_metric
    # Clearly better on the same rows: the paired bootstrap CI of the gain is above 0.
    assert decision.ci_versus == "champion" and 0 < decision.ci_low < decision.ci_high
    gain = decision.candidate_metric - decision.champion_metric
    assert decision.ci_low < gain < decision.ci_high
    assert registry.champion().checkpoint_id == "ckpt-good"

    # 3. A worse candidate (trained on another hidden model) is rejected, with the reason recorded.
    offer("unrelated")
    decision = gate_and_record("unrelated", "good")
    assert not decision.promote
    assert registry.champion().checkpoint_id == "ckpt-good"
    rejected = registry.history()[-1]
    assert rejected.event == "rejected" and rejected.checkpoint_id == "ckpt-unrelated"
    assert "worse by" in rejected.reason and rejected.metric_value < rejected.champion_metric_value

    # 4. The champion's file is corrupted: loading falls back to the previous good champion and says why.
    flip_byte(ckpt_dir / "ckpt-good.pt")
    loaded = registry.load_champion()
    assert loaded.fell_back and loaded.entry.checkpoint_id == "ckpt-weak"
    assert (
        len(loaded.problems) == 1 and "ckpt-good" in loaded.problems[0] and good.sha256 in loaded.problems[0]
    )
    assert state_digest(restore_model(loaded.checkpoint, spec).model) == state_digest(models["weak"].model)
    assert registry.champion().checkpoint_id == "ckpt-good"  # loading does not move the pointer

    # 5. Rollback moves the pointer back in one commit; a second rollback has nowhere to go.
    version_before = DeltaTable(registry.uri).version()
    event = registry.rollback("champion file corrupt")
    assert DeltaTable(registry.uri).version() == version_before + 1
    assert event.event == "rolled_back" and event.checkpoint_id == "ckpt-weak"
    assert registry.champion().checkpoint_id == "ckpt-weak"
    assert not registry.load_champion().fell_back
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()

    events = [(e.seq, e.event, e.checkpoint_id) for e in registry.history()]
    assert events == [
        (0, "registered", "ckpt-weak"),
        (1, "promoted", "ckpt-weak"),
        (2, "registered", "ckpt-good"),
        (3, "promoted", "ckpt-good"),
        (4, "registered", "ckpt-unrelated"),
        (5, "rejected", "ckpt-unrelated"),
        (6, "rolled_back", "ckpt-weak"),
    ]
    assert registry.history()[2].lineage == {"name": "good"}
    with pytest.raises(RegistryError, match="not registered"):
        registry.promote("ckpt-unknown", "by hand")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote("ckpt-weak", "again")


def test_no_loadable_champion_is_an_error(world, tmp_path):
    spec, _, models, _ = world
    registry = ModelRegistry(tmp_path / "registry")
    saved = save(models["weak"], spec, tmp_path / "c", "ckpt-only")
    registry.register(Candidate.from_saved(saved, "auc", 0.6, {}))
    registry.promote("ckpt-only", "first")
    (tmp_path / "c" / "ckpt-only.pt").unlink()
    with pytest.raises(
        RegistryError, match=r"no champion .* can be loaded: ckpt-only: checkpoint file .* does not exist"
    ):
        registry.load_champion()


def test_lineage_rebuilds_the_exact_training_set(world, tmp_path):
    """Train on version 0, append rows (version 1), then rebuild version 0 from the checkpoint's lineage."""
    spec, teacher, _, _ = world
    uri = str(tmp_path / "training_set")
    v0 = teacher.table(1500, seed=10)
    write_deltalake(uri, v0)
    rows = read_training_rows(uri, 0, spec)
    state = fit_feature_state(spec, rows, None, cold_start=True, seed=0)
    result = train(make_spec(epochs=1), state, *tensors_from_arrow(rows, spec, state).split(0.1, seed=0))
    lineage = Lineage(
        training_set_uri=uri,
        training_set_version=0,
        kafka_offsets=[{"topic": "clickstream", "partition": 0, "start": 0, "end": 1500}],
        spec_fingerprint=spec.fingerprint(),
        metrics=result.metrics,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    save(result, spec, tmp_path / "ckpt", "ckpt-v0", lineage)
    write_deltalake(uri, teacher.table(500, seed=11, start_offset=1500), mode="append")
    assert DeltaTable(uri).version() == 1

    recorded = Lineage.from_dict(load_checkpoint(tmp_path / "ckpt" / "ckpt-v0.pt")["lineage"])
    rebuilt = read_training_table(recorded.training_set_uri, recorded.training_set_version)
    assert rebuilt.sort_by("_offset").equals(v0.sort_by("_offset"))
    assert read_training_table(uri, None).num_rows == 2000
    assert recorded.spec_fingerprint == spec.fingerprint()
    assert recorded.kafka_offsets[0]["end"] == 1500
