"""Training on real Delta tables: learning a hidden model, warm start, determinism, sharding, weights, models.

Data come from :class:`LinearTeacher` (a random linear model over the demo spec's features), written as Delta
tables in ``tmp_path`` and read back through the training data path.
"""

import sys
import textwrap

import pyarrow as pa
import pytest
import torch
from deltalake import write_deltalake

from rt_training.features.state import fit_feature_state
from rt_training.spec import load_spec
from rt_training.training.checkpoints import (
    IncompatibleCheckpointError,
    Lineage,
    build_checkpoint,
    state_digest,
)
from rt_training.training.data import (
    SAMPLE_WEIGHT_COLUMN,
    EpochBatches,
    TrainingDataError,
    read_training_rows,
    tensors_from_arrow,
)
from rt_training.training.loop import evaluate, prediction_summary, row_losses, train
from rt_training.training.models import build_model
from rt_training.training.objectives import objective_for
from rt_training.training.teacher import LinearTeacher

torch.set_num_threads(1)


def fitted(spec, table, previous=None):
    """The feature state fitted on ``table`` (as a training run does) and the table's tensors under it."""
    state = fit_feature_state(spec, table, previous, cold_start=previous is None, seed=spec.training.seed)
    return state, tensors_from_arrow(table, spec, state)


def make_spec(model=None, **training):
    spec = load_spec()
    update = {"training": spec.training.model_copy(update=training)}
    if model is not None:
        update["model"] = spec.model.model_copy(update=model)
    return spec.model_copy(update=update)


def write_table(uri, table):
    write_deltalake(str(uri), table, mode="append")
    return str(uri)


def test_training_learns_the_hidden_model(tmp_path):
    """Held-out AUC > 0.75 (chance is 0.5; the hidden model itself scores about 0.9) from 4,000 rows."""
    spec = make_spec(epochs=5, early_stopping_patience=5)
    teacher = LinearTeacher(spec, seed=3)
    uri = write_table(tmp_path / "training_set", teacher.table(4000, seed=1))
    state, data = fitted(spec, read_training_rows(uri, 0, spec))
    train_part, valid_part = data.split(0.1, seed=spec.training.seed)
    assert (len(train_part), len(valid_part)) == (3600, 400)

    progress = []
    result = train(spec, state, train_part, valid_part, log_every=10, progress=progress.append)

    holdout = tensors_from_arrow(teacher.table(3000, seed=99), spec, state)
    _, holdout_auc = evaluate(result.model, holdout, spec)
    assert holdout_auc > 0.75
    assert result.metrics["auc"] > 0.7
    assert result.loss_last < result.loss_first
    assert result.steps == 5 * 8 and result.epochs == 5  # 3600 rows / 512 per batch = 8 steps per epoch
    assert [p.kind for p in progress].count("epoch") == 5
    assert all(p.samples_per_s > 0 for p in progress)
    assert result.device == "cpu" and result.world_size == 1
    assert len(result.loss_curve) == result.steps  # fewer than 100 steps: every point kept


def test_early_stopping_restores_the_best_epoch(tmp_path):
    # Labels independent of the features: validation loss stops improving quickly, a big lr makes it worse.
    spec = make_spec(epochs=30, early_stopping_patience=2, learning_rate=0.05, metric="log_loss")
    table = LinearTeacher(spec, seed=3, scale=0.0).table(1500, seed=1)
    state, data = fitted(spec, table)
    train_part, valid_part = data.split(0.2, seed=0)
    result = train(spec, state, train_part, valid_part)
    assert result.stopped_early
    assert result.epochs == result.best_epoch + 2
    assert evaluate(result.model, valid_part, spec)[1] == pytest.approx(result.metrics["log_loss"], abs=1e-6)


def test_same_seed_same_weights_on_cpu():
    spec = make_spec(epochs=2)
    state, data = fitted(spec, LinearTeacher(spec, seed=3).table(1200, seed=1))
    train_part, valid_part = data.split(0.1, seed=0)
    a = train(spec, state, train_part, valid_part)
    b = train(spec, state, train_part, valid_part)
    c = train(make_spec(epochs=2, seed=8), state, train_part, valid_part)
    assert state_digest(a.model) == state_digest(b.model)
    assert a.loss_curve == b.loss_curve
    assert state_digest(a.model) != state_digest(c.model)


def _checkpoint_of(result, spec, state):
    return build_checkpoint(
        checkpoint_id="champion",
        model=result.model,
        optimizer_state=result.optimizer_state,
        spec=spec,
        state=state,
        step=result.total_steps,
        epoch=result.epochs,
        metrics=result.metrics,
        lineage=Lineage(),
    )


def test_warm_start_continues_from_the_champion():
    """The new run's first loss is the champion's loss on that same first batch.

    With dropout 0 the train-mode loss of step 0 is comparable exactly. With dropout > 0 a train-mode loss
    depends on the random mask, so the comparison uses the eval-mode loss on the validation split
    (``initial_validation_loss``), computed before the first update.
    """
    spec = make_spec(model={"dropout": 0.0}, epochs=3)
    teacher = LinearTeacher(spec, seed=3)
    state, old = fitted(spec, teacher.table(3000, seed=1))
    champion = train(spec, state, *old.split(0.1, seed=0))
    checkpoint = _checkpoint_of(champion, spec, state)

    new_train, new_valid = tensors_from_arrow(teacher.table(2000, seed=2), spec, state).split(0.1, seed=0)
    warm = train(spec, state, new_train, new_valid, init_checkpoint=checkpoint, max_steps=1)
    scratch = train(spec, state, new_train, new_valid, max_steps=1)

    first = next(EpochBatches(len(new_train), spec.training.batch_size, spec.training.seed).batches(0))
    batch = new_train.take(first)
    with torch.no_grad():
        champion_loss = (
            objective_for(spec)
            .loss(champion.model(batch.inputs), batch.label, batch.weight, batch.inputs)
            .item()
        )
    assert warm.loss_first == pytest.approx(champion_loss, abs=1e-6)
    assert warm.loss_first < scratch.loss_first - 0.05  # a warm start is not a cold one
    assert warm.total_steps == champion.total_steps + 1

    # Dropout on: compare in eval mode.
    spec_d = make_spec(model={"dropout": 0.3}, epochs=2)
    champion_d = train(spec_d, state, *old.split(0.1, seed=0))
    warm_d = train(
        spec_d,
        state,
        new_train,
        new_valid,
        init_checkpoint=_checkpoint_of(champion_d, spec_d, state),
        max_steps=1,
    )
    assert warm_d.initial_validation_loss == pytest.approx(
        evaluate(champion_d.model, new_valid, spec_d)[0], abs=1e-6
    )


def test_warm_start_refuses_a_checkpoint_for_another_model():
    spec = make_spec(epochs=1)
    state, data = fitted(spec, LinearTeacher(spec, seed=3).table(600, seed=1))
    result = train(spec, state, *data.split(0.1, seed=0))
    other = make_spec(model={"hidden": [16]})
    with pytest.raises(IncompatibleCheckpointError, match="hidden"):
        train(other, state, *data.split(0.1, seed=0), init_checkpoint=_checkpoint_of(result, spec, state))


def test_epoch_batches_shard_disjointly_and_equally():
    n, world = 1001, 2
    shards = [EpochBatches(n, 100, seed=5, rank=r, world_size=world) for r in range(world)]
    for epoch in range(3):
        parts = [torch.cat(list(s.batches(epoch))) for s in shards]
        assert [len(p) for p in parts] == [500, 500]
        assert len(set(parts[0].tolist()) | set(parts[1].tolist())) == 1000  # disjoint
        assert [len(list(s.batches(epoch))) for s in shards] == [10, 10]  # 50 rows per rank per step
    assert not torch.equal(shards[0].permutation(0), shards[0].permutation(1))
    assert torch.equal(shards[0].permutation(2), EpochBatches(n, 100, seed=5).permutation(2))
    with pytest.raises(TrainingDataError, match="cannot be shared"):
        EpochBatches(1, 10, seed=0, world_size=2)


def test_sample_weights_are_read_and_used(tmp_path):
    """Half the rows have flipped labels and weight 0: with the weights the model learns the hidden model,
    without them the labels carry no signal."""
    spec = make_spec(epochs=6, early_stopping_patience=6)
    teacher = LinearTeacher(spec, seed=3)
    clean = teacher.table(3000, seed=1)
    noisy = teacher.table(3000, seed=2)
    flipped = pa.compute.subtract(pa.scalar(1, pa.int64()), noisy.column("clicked"))
    noisy = noisy.set_column(noisy.schema.get_field_index("clicked"), "clicked", flipped)
    mixed = pa.concat_tables([clean, noisy])
    weights = pa.array([1.0] * 3000 + [0.0] * 3000, pa.float32())
    weighted_uri = write_table(tmp_path / "weighted", mixed.append_column(SAMPLE_WEIGHT_COLUMN, weights))
    plain_uri = write_table(tmp_path / "plain", mixed)

    state, weighted = fitted(spec, read_training_rows(weighted_uri, 0, spec))
    plain = tensors_from_arrow(read_training_rows(plain_uri, 0, spec), spec, state)
    assert weighted.weight is not None and float(weighted.weight.sum()) == 3000.0
    assert plain.weight is None

    holdout = tensors_from_arrow(teacher.table(3000, seed=99), spec, state)
    auc_weighted = evaluate(train(spec, state, *weighted.split(0.1, seed=0)).model, holdout, spec)[1]
    auc_plain = evaluate(train(spec, state, *plain.split(0.1, seed=0)).model, holdout, spec)[1]
    assert auc_weighted > 0.75
    assert abs(auc_plain - 0.5) < 0.1


def test_row_losses_average_to_the_validation_loss():
    spec = make_spec(epochs=1)
    state, data = fitted(spec, LinearTeacher(spec, seed=3).table(800, seed=1))
    result = train(spec, state, *data.split(0.1, seed=0))
    losses = row_losses(result.model, data, spec)
    assert losses.shape == (800,) and (losses > 0).all()
    assert losses.mean() == pytest.approx(evaluate(result.model, data, spec)[0], rel=1e-5)
    # A row's loss is -log p(label): rows the model gets confidently wrong cost the most.
    prob = prediction_summary(result.model, data, spec)
    worst = losses.argmax()
    assert abs(prob[worst] - data.label[worst].item()) > 0.5


def test_bad_training_data_is_named(tmp_path):
    spec = make_spec()
    table = LinearTeacher(spec, seed=3).table(10, seed=1)
    state, _ = fitted(spec, table)
    i = table.schema.get_field_index("clicked")
    with pytest.raises(TrainingDataError, match="binary label 'clicked' holds 2"):
        tensors_from_arrow(table.set_column(i, "clicked", pa.array([2] * 10, pa.int64())), spec, state)
    with pytest.raises(TrainingDataError, match="label 'clicked' has 1 null"):
        tensors_from_arrow(
            table.set_column(i, "clicked", pa.array([None] + [1] * 9, pa.int64())), spec, state
        )
    with pytest.raises(TrainingDataError, match=r"missing columns \['price'\]"):
        tensors_from_arrow(table.drop_columns(["price"]), spec, state)
    with pytest.raises(TrainingDataError, match="no Delta table"):
        read_training_rows(str(tmp_path / "nowhere"), 0, spec)


def test_user_model_factory_trains_through_the_loop(tmp_path, monkeypatch):
    """A factory model (built-in factories' errors are tested with the models) takes the batch dict and the
    loop trains it like a built-in."""
    (tmp_path / "batch_dict_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Linear(nn.Module):
                def __init__(self, names):
                    super().__init__()
                    self.names = names
                    self.lin = nn.Linear(len(names), 1)

                def forward(self, batch):
                    return self.lin(torch.stack([batch[n] for n in self.names], dim=1)).squeeze(-1)

            def make(spec, state):
                return Linear([i.name for i in state.inputs if i.kind == "numeric"])
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = make_spec()
    spec = spec.model_copy(
        update={"model": spec.model.model_copy(update={"factory": "batch_dict_models:make", "builtin": None})}
    )
    state, data = fitted(spec, LinearTeacher(spec, seed=3).table(600, seed=1))
    assert type(build_model(spec, state)).__name__ == "Linear"
    result = train(spec, state, *data.split(0.1, seed=0))
    assert result.steps > 0 and result.metrics["auc"] > 0.5
    sys.modules.pop("batch_dict_models", None)
