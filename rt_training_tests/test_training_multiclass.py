"""A multiclass label whose classes are learned from the data, and a class that appears mid-stream.

The first training set holds classes ``low`` and ``mid``; later rows bring ``high``. The warm-started
retraining grows the output layer by one row (the old rows keep their weights exactly) and learns the new
class, while the champion, which cannot know it, counts every ``high`` row wrong.
"""

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from rt_training.features.state import fit_feature_state
from rt_training.spec import parse_spec
from rt_training.training.checkpoints import Lineage, Restored, build_checkpoint
from rt_training.training.data import tensors_from_arrow
from rt_training.training.gate import run_gate
from rt_training.training.loop import evaluate, train
from rt_training.training.models import build_model, grow_state_dict

torch.set_num_threads(1)

SPEC = """
name: tickets
source: {topic: tickets}
schema:
  id_field: id
  time_field: at
  fields:
    id: {type: string}
    at: {type: timestamp}
    size: {type: float}
    channel: {type: string}
    priority: {type: string}
features:
  numeric: [{name: size}]
  categorical: [{name: channel}]
label: {field: priority, kind: multiclass}
model: {builtin: mlp, hidden: [32]}
training: {epochs: 40, batch_size: 128, learning_rate: 0.01, early_stopping_patience: 5, min_holdout_rows: 100}
"""


def rows(n: int, seed: int, with_high: bool, start_s: int = 0) -> pa.Table:
    """``priority`` is a deterministic function of ``size`` (and ``channel`` for ties): easy to learn exactly."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(0.0, 3.0 if with_high else 2.0, n)
    channel = rng.choice(["mail", "phone"], n)
    priority = np.where(size < 1.0, "low", np.where(size < 2.0, "mid", "high"))
    at = np.datetime64("2026-01-01", "us") + (start_s + np.arange(n)) * np.timedelta64(1, "s")
    return pa.table(
        {
            "id": [f"{seed}-{i}" for i in range(n)],
            "at": pa.array(at, pa.timestamp("us", tz="UTC")),
            "size": size,
            "channel": channel,
            "priority": priority,
        }
    )


def test_a_class_appearing_mid_stream_is_added_and_learned():
    spec = parse_spec(yaml.safe_load(SPEC))
    assert spec.training.metric == "accuracy"  # the multiclass default
    first = rows(3000, seed=1, with_high=False)
    state = fit_feature_state(spec, first, None, cold_start=True, seed=0)
    assert state.num_classes == 2
    champion = train(spec, state, *tensors_from_arrow(first, spec, state).split(0.1, seed=0))
    assert champion.metrics["accuracy"] > 0.95

    later = rows(3000, seed=2, with_high=True, start_s=3000)
    grown = fit_feature_state(spec, later, state, cold_start=False, seed=0)
    assert grown.num_classes == 3
    # The old classes keep their indices; the new one is appended.
    old_labels = tensors_from_arrow(first.slice(0, 200), spec, state).label
    assert torch.equal(tensors_from_arrow(first.slice(0, 200), spec, grown).label, old_labels)
    # Under the champion's state the new class is unknown: -1.
    assert (tensors_from_arrow(rows(50, 9, True), spec, state).label == -1).sum() > 0

    checkpoint = build_checkpoint(
        checkpoint_id="champion",
        model=champion.model,
        optimizer_state=champion.optimizer_state,
        spec=spec,
        state=state,
        step=champion.total_steps,
        epoch=champion.epochs,
        metrics=champion.metrics,
        lineage=Lineage(),
    )
    before = {k: v.clone() for k, v in champion.model.state_dict().items()}
    warm = train(
        spec,
        grown,
        *tensors_from_arrow(later, spec, grown).split(0.1, seed=0),
        init_checkpoint=checkpoint,
        max_steps=1,
    )
    assert warm.grown
    out_w = next(k for k, v in warm.model.state_dict().items() if v.shape[0] == 3 and k in before)
    assert before[out_w].shape[0] == 2
    warm = train(
        spec, grown, *tensors_from_arrow(later, spec, grown).split(0.1, seed=0), init_checkpoint=checkpoint
    )

    holdout = rows(1000, seed=3, with_high=True, start_s=6000)
    high = holdout.filter(pa.compute.equal(holdout.column("priority"), "high"))
    _, champion_high = evaluate(champion.model, tensors_from_arrow(high, spec, state), spec)
    _, warm_high = evaluate(warm.model, tensors_from_arrow(high, spec, grown), spec)
    assert champion_high == 0.0  # it cannot name a class it never saw
    assert warm_high > 0.9
    decision = run_gate(spec, Restored(warm.model, grown), Restored(champion.model, state), holdout)
    assert decision.promote and decision.candidate_metric > decision.champion_metric + 0.2
    assert decision.ci_versus == "champion" and decision.ci_low > 0.2


def test_first_multiclass_champion_must_beat_the_majority_class():
    spec = parse_spec(yaml.safe_load(SPEC))
    table = rows(2000, seed=5, with_high=True)
    state = fit_feature_state(spec, table, None, cold_start=True, seed=0)
    result = train(spec, state, *tensors_from_arrow(table, spec, state).split(0.1, seed=0), max_steps=1)
    decision = run_gate(spec, Restored(result.model, state), None, rows(600, seed=6, with_high=True))
    labels = rows(600, seed=6, with_high=True).column("priority").to_numpy(zero_copy_only=False)
    majority = max(np.mean(labels == c) for c in ("low", "mid", "high"))
    assert decision.baseline_metric == pytest.approx(majority)
    assert decision.ci_versus == "baseline"


def test_a_grown_vocabulary_keeps_the_champion_rows_and_its_predictions():
    """A new channel appears: the warm start's model has one more embedding row, the old rows are the
    champion's bit for bit, and on rows of the old channels it predicts exactly what the champion predicted."""
    spec = parse_spec(yaml.safe_load(SPEC))
    first = rows(2000, seed=1, with_high=True)
    state = fit_feature_state(spec, first, None, cold_start=True, seed=0)
    champion = train(spec, state, *tensors_from_arrow(first, spec, state).split(0.1, seed=0), max_steps=20)

    later = rows(2000, seed=2, with_high=True)
    chat = pa.array(
        np.where(
            np.arange(later.num_rows) % 4 == 0, "chat", later.column("channel").to_numpy(zero_copy_only=False)
        )
    )
    later = later.set_column(later.schema.get_field_index("channel"), "channel", chat)
    grown = fit_feature_state(spec, later, state, cold_start=False, seed=0)
    assert grown.describe()["vocabulary_added.channel"] == 1

    model = build_model(spec, grown)
    model.load_state_dict(grow_state_dict(champion.model.state_dict(), model))
    old, new = champion.model.state_dict(), model.state_dict()
    grown_keys = [k for k in new if new[k].shape != old[k].shape]
    assert len(grown_keys) == 1 and new[grown_keys[0]].shape[0] == old[grown_keys[0]].shape[0] + 1
    assert torch.equal(new[grown_keys[0]][: old[grown_keys[0]].shape[0]], old[grown_keys[0]])
    assert all(torch.equal(new[k], old[k]) for k in new if k not in grown_keys)

    holdout = rows(300, seed=4, with_high=True)
    model.eval()
    with torch.no_grad():
        before = champion.model(tensors_from_arrow(holdout, spec, state).inputs)
        after = model(tensors_from_arrow(holdout, spec, grown).inputs)
    assert torch.equal(before, after)
