"""``rt-training model list|promote|rollback`` against a real registry table and real checkpoint files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rt_training.cli.main import cli
from rt_training.features.state import fit_feature_state
from rt_training.spec import load_spec
from rt_training.training.checkpoints import Lineage, build_checkpoint, new_checkpoint_id, save_checkpoint
from rt_training.training.models import build_model
from rt_training.training.registry import Candidate, ModelRegistry
from rt_training.training.teacher import LinearTeacher


def checkpoint(spec, directory: Path, auc: float, seed: int) -> Candidate:
    torch.manual_seed(seed)
    state = fit_feature_state(spec, LinearTeacher(spec).table(50, seed=seed), None, cold_start=True, seed=0)
    payload = build_checkpoint(
        checkpoint_id=new_checkpoint_id(),
        model=build_model(spec, state),
        optimizer_state=None,
        spec=spec,
        state=state,
        step=0,
        epoch=0,
        metrics={"auc": auc},
        lineage=Lineage(metrics={"auc": auc}),
    )
    saved = save_checkpoint(payload, directory)
    return Candidate.from_saved(saved, "auc", auc, {})


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Path, ModelRegistry, list[Candidate]]:
    """Three registered checkpoints; the first promoted by hand, the second by the gate."""
    spec = load_spec()
    registry = ModelRegistry(tmp_path / spec.name / "model_registry")
    made = [
        checkpoint(spec, tmp_path / spec.name / "checkpoints", auc, seed)
        for seed, auc in enumerate((0.7, 0.72, 0.69))
    ]
    for c in made:
        registry.register(c)
    registry.promote(made[0].checkpoint_id, "gate: first")
    registry.promote(made[1].checkpoint_id, "gate: better", metric_value=0.71, champion_metric_value=0.69)
    return tmp_path, registry, made


def invoke(*args: str):
    return CliRunner().invoke(cli, ["model", *args], catch_exceptions=False)


def test_list_shows_every_event_and_marks_the_champion(lake) -> None:
    root, _, made = lake
    out = invoke("list", "--lake", str(root))
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split()[:4] == ["seq", "time", "(UTC)", "event"]
    events = [line.split() for line in lines[1:-1]]  # seq, date, time, event, [*], checkpoint, metric, reason
    assert [e[3] for e in events] == ["registered"] * 3 + ["promoted", "promoted"]
    marked = [e for e in events if e[4] == "*"]
    assert [e[5] for e in marked] == [made[1].checkpoint_id] * 2
    # Registrations and hand promotions carry the validation metric; the gate's decisions the held-out one.
    assert "auc=0.7000 (validation)" in lines[1] and "auc=0.7000 (validation)" in lines[4]
    assert "auc=0.7100 (held-out)" in lines[5] and lines[5].endswith("gate: better")
    assert lines[-1] == f"champion: {made[1].checkpoint_id}"


def test_list_without_a_registry_says_so(tmp_path: Path) -> None:
    out = invoke("list", "--lake", str(tmp_path))
    assert out.exit_code == 0 and "no models registered yet for pipeline 'clickstream'" in out.output


def test_promote_verifies_the_file_then_moves_the_pointer(lake) -> None:
    root, registry, made = lake
    target = made[2].checkpoint_id
    out = invoke("promote", target, "--lake", str(root), "--reason", "hand-picked")
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"champion: {made[1].checkpoint_id} -> {target}"
    assert registry.champion().checkpoint_id == target and registry.champion().reason == "hand-picked"
    # Already the champion, unknown, or a corrupt file: refused with the reason, the pointer stays.
    again = invoke("promote", target, "--lake", str(root))
    assert again.exit_code == 1 and "already the champion" in again.output
    unknown = invoke("promote", "ckpt-nope", "--lake", str(root))
    assert unknown.exit_code == 1 and "'ckpt-nope' is not registered" in unknown.output
    path = Path(made[0].path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    corrupt = invoke("promote", made[0].checkpoint_id, "--lake", str(root))
    assert corrupt.exit_code == 1 and "is corrupt: sha256 expected" in corrupt.output
    assert registry.champion().checkpoint_id == target
    assert len(registry.history()) == 6


def test_rollback_moves_back_one_champion_at_a_time(lake) -> None:
    root, registry, made = lake
    out = invoke("rollback", "--lake", str(root))
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"champion: {made[1].checkpoint_id} -> {made[0].checkpoint_id}"
    assert registry.champion().checkpoint_id == made[0].checkpoint_id
    assert registry.history()[-1].event == "rolled_back"
    last = invoke("rollback", "--lake", str(root))
    assert last.exit_code == 1 and "no previous champion to roll back to" in last.output
    assert registry.champion().checkpoint_id == made[0].checkpoint_id
