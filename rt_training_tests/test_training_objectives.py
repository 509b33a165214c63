"""Objectives and ratio metrics on plain tensors: losses by hand, baselines, the ratio bootstrap."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rt_training.training.bootstrap import paired_bootstrap_ratio
from rt_training.training.data import TrainingTensors
from rt_training.training.objectives import Objective, RowScores, baseline_terms, ratio_metric


def test_multiclass_loss_leaves_unknown_classes_out_and_accuracy_counts_them_wrong():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    label = torch.tensor([0, 1, 0, -1])
    objective = Objective("multiclass")
    expected = F.cross_entropy(logits[:3], label[:3])
    assert torch.allclose(objective.loss(logits, label, None, {}), expected)
    scores = RowScores(**objective.scores(logits, label, {}))
    assert objective.metric("accuracy", scores, label.numpy()) == pytest.approx(2 / 4)
    assert objective.metric("log_loss", scores, label.numpy()) == pytest.approx(float(expected), rel=1e-6)


def test_weighted_loss_is_the_weighted_mean_of_row_losses():
    logits, label = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.0, 0.0])
    weight = torch.tensor([1.0, 2.0, 0.5])
    per_row = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    got = Objective("binary").loss(logits, label, weight, {})
    assert torch.allclose(got, (per_row * weight).sum() / weight.sum())


def test_language_model_loss_shifts_by_one_and_ignores_padding():
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    mask = ids != 0
    logits = torch.randn(2, 4, 10, generator=torch.Generator().manual_seed(0))
    batch = {"text": ids, "text__mask": mask}
    objective = Objective("language_model", "text")
    # Row 0 predicts 5, 6, 3 from positions 0..2; row 1 predicts 7, 3 (its last position is padding).
    targets = [(0, 0, 5), (0, 1, 6), (0, 2, 3), (1, 0, 7), (1, 1, 3)]
    nll = [float(-torch.log_softmax(logits[r, t], dim=0)[tok]) for r, t, tok in targets]
    assert float(objective.loss(logits, None, None, batch)) == pytest.approx(sum(nll) / 5, rel=1e-5)
    scores = RowScores(**objective.scores(logits, None, batch))
    assert scores.count.tolist() == [3.0, 2.0]
    assert objective.metric("perplexity", scores, None) == pytest.approx(math.exp(sum(nll) / 5), rel=1e-5)
    # Changing a padded position's logits changes nothing.
    changed = logits.clone()
    changed[1, 3] += 100.0
    assert float(objective.loss(changed, None, None, batch)) == pytest.approx(sum(nll) / 5, rel=1e-5)


def test_unigram_baseline_is_the_held_out_token_entropy():
    ids = torch.tensor([[2, 4, 4, 5, 3], [2, 4, 3, 0, 0]])
    data = TrainingTensors({"text": ids, "text__mask": ids != 0}, None)
    num, den = baseline_terms(Objective("language_model", "text"), "perplexity", data)
    # Targets: 4 4 5 3 | 4 3 -> p(4) = 3/6, p(5) = 1/6, p(3) = 2/6.
    p = {4: 3 / 6, 5: 1 / 6, 3: 2 / 6}
    assert den.tolist() == [4.0, 2.0]
    assert num[0] == pytest.approx(-(2 * math.log(p[4]) + math.log(p[5]) + math.log(p[3])))
    entropy = -sum(q * math.log(q) for q in p.values())
    assert ratio_metric("token_loss", num, den) == pytest.approx(entropy)


def test_multiclass_baselines_majority_and_prior():
    label = torch.tensor([0, 0, 1, 2, 0, 1])
    data = TrainingTensors({"x": torch.zeros(6)}, label)
    objective = Objective("multiclass")
    assert ratio_metric("accuracy", *baseline_terms(objective, "accuracy", data)) == pytest.approx(0.5)
    prior_loss = -(3 * math.log(3 / 6) + 2 * math.log(2 / 6) + math.log(1 / 6)) / 6
    assert ratio_metric("log_loss", *baseline_terms(objective, "log_loss", data)) == pytest.approx(prior_loss)


def test_ratio_bootstrap_sees_a_real_gain_and_no_gain_against_itself():
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 30, 400).astype(float)
    ref = tokens * rng.normal(3.0, 0.3, 400)
    better = tokens * rng.normal(2.5, 0.3, 400)
    interval = paired_bootstrap_ratio("perplexity", (better, tokens), (ref, tokens), samples=300, seed=1)
    gain = math.exp(3.0) - math.exp(2.5)
    assert interval.low > 0.7 * gain and interval.high < 1.3 * gain
    same = paired_bootstrap_ratio("token_loss", (ref, tokens), (ref, tokens), samples=50, seed=1)
    assert (same.low, same.high) == (0.0, 0.0)
