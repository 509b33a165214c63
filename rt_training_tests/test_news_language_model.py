"""The bundled news spec end to end without Kafka: synthetic headlines → cleaning → feature state (a BPE
tokenizer trained on the first training set) → ``causal_lm`` → the gate against the unigram baseline.

The held-out rows are the newest headlines, as the gate's window is. A language model that learned anything
about word order beats the best context-free prediction (the held-out unigram distribution) by a wide margin.
"""

import sys
from pathlib import Path

import torch

from rt_training.features.state import fit_feature_state
from rt_training.spec import load_spec
from rt_training.training.checkpoints import Restored
from rt_training.training.data import tensors_from_arrow
from rt_training.training.gate import run_gate
from rt_training.training.loop import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_epochs import silver_rows

torch.set_num_threads(1)


def test_causal_lm_beats_the_unigram_baseline_on_the_news_stream():
    spec = load_spec("news")
    rows = silver_rows(spec, 5000, seed=7)
    train_rows, holdout = rows.slice(0, 4000), rows.slice(4000)
    state = fit_feature_state(spec, train_rows, None, cold_start=True, seed=spec.training.seed)
    tokenizer = state.tokenizer("headline")
    assert 500 < tokenizer.vocab_size <= 2000
    data = tensors_from_arrow(train_rows, spec, state)
    result = train(spec, state, *data.split(0.1, seed=0), log_every=0)
    assert result.tokens_per_s is not None and result.tokens_per_s > 0
    assert result.loss_last < result.loss_first

    decision = run_gate(spec, Restored(result.model, state), None, holdout)
    assert decision.metric_name == "perplexity" and decision.ci_versus == "baseline"
    # Measured: perplexity 32.9 against the unigram distribution's 126.9 (3 epochs, a 1,539-token BPE vocabulary).
    assert decision.candidate_metric < 0.6 * decision.baseline_metric
    assert decision.promote and decision.ci_low > 0
