"""Held-out AUC of the demo spec's training defaults against the old fixed 3 epochs, fresh and warm-started.

    python benchmarks/bench_epochs.py                 # 24,000 synthetic events, seed 7
    python benchmarks/bench_epochs.py --events 12000  # quicker

The demo's synthetic stream (:class:`~rt_training.stream.synthetic.EventGenerator`) is cleaned into silver
rows (:func:`~rt_training.clean.clean_batch`) in event-time order. The last sixth is the held-out window; the
rows before it are the training data (no sampling: every row, 10% of it the validation split). ``fresh``
trains from scratch on all of it; ``warm`` first trains a champion on the first half with the same policy, then
warm-starts from it on the second half. Each policy runs with the spec's seed:

* ``old``: ``epochs: 3``, ``early_stopping_patience: 2``, ``early_stopping_min_delta: 0`` (the former demo);
* ``new``: the demo spec as shipped (early stopping over at most ``training.epochs``).

Result: ``benchmarks/results/epochs.json`` (held-out AUC, epochs run, best epoch, seconds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from _common import write_result

from rt_training.clean import clean_batch
from rt_training.features.state import FeatureState, fit_feature_state
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.synthetic import EventGenerator
from rt_training.training.checkpoints import Lineage, build_checkpoint
from rt_training.training.data import TrainingTensors, tensors_from_arrow
from rt_training.training.loop import evaluate, train

VALIDATION_FRACTION = 0.1


def silver_rows(spec: PipelineSpec, events: int, seed: int) -> pa.Table:
    batch = EventGenerator(spec, seed=seed).generate(events)
    n = len(batch)
    now = dt.datetime.now(dt.UTC)
    bronze = pa.table(
        {
            "topic": [spec.source.topic] * n,
            "partition": pa.array([0] * n, pa.int32()),
            "offset": pa.array(range(n), pa.int64()),
            "timestamp": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
            "key": pa.array(batch.keys, pa.binary()),
            "value": pa.array(batch.values, pa.binary()),
            "ingested_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            "run_id": ["bench"] * n,
        }
    )
    silver = clean_batch(bronze, spec, now=now).silver
    return silver.sort_by(spec.time_field)


def policy(spec: PipelineSpec, name: str) -> PipelineSpec:
    if name == "new":
        return spec
    old = spec.training.model_copy(
        update={"epochs": 3, "early_stopping_patience": 2, "early_stopping_min_delta": 0.0}
    )
    return spec.model_copy(update={"training": old})


def fit(
    spec: PipelineSpec, rows: pa.Table, previous: FeatureState | None, init: dict[str, Any] | None
) -> Any:
    """Fit the feature state on ``rows`` as a training run does (growing ``previous``), then train."""
    state = fit_feature_state(spec, rows, previous, cold_start=init is None, seed=spec.training.seed)
    data: TrainingTensors = tensors_from_arrow(rows, spec, state)
    return train(
        spec, state, *data.split(VALIDATION_FRACTION, spec.training.seed), init_checkpoint=init, log_every=0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=24_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_spec()
    rows = silver_rows(spec, args.events, spec.training.seed)
    cut = rows.num_rows * 5 // 6
    train_rows, holdout = rows.slice(0, cut), rows.slice(cut)
    first, second = train_rows.slice(0, cut // 2), train_rows.slice(cut // 2)
    results: dict[str, Any] = {"events": args.events, "train_rows": cut, "holdout_rows": holdout.num_rows}
    for name in ("old", "new"):
        s = policy(spec, name)
        start = time.perf_counter()
        fresh = fit(s, train_rows, None, None)
        fresh_s = time.perf_counter() - start
        champion = fit(s, first, None, None)
        payload = build_checkpoint(
            checkpoint_id="champion",
            model=champion.model,
            optimizer_state=champion.optimizer_state,
            spec=s,
            state=champion.state,
            step=champion.total_steps,
            epoch=champion.epochs,
            metrics=champion.metrics,
            lineage=Lineage(),
        )
        start = time.perf_counter()
        warm = fit(s, second, champion.state, payload)
        warm_s = time.perf_counter() - start
        for kind, result, seconds in (("fresh", fresh, fresh_s), ("warm", warm, warm_s)):
            _, auc = evaluate(result.model, tensors_from_arrow(holdout, s, result.state, where="holdout"), s)
            results[f"{name}_{kind}"] = {
                "holdout_auc": round(auc, 4),
                "epochs": result.epochs,
                "best_epoch": result.best_epoch,
                "seconds": round(seconds, 1),
            }
            print(
                f"{name:3} {kind:5} held-out auc {auc:.4f} epochs {result.epochs} (best {result.best_epoch})"
            )
    results["new_policy"] = {
        k: getattr(spec.training, k)
        for k in ("epochs", "early_stopping_patience", "early_stopping_min_delta")
    }
    write_result("epochs", results)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
