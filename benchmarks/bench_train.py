"""Training throughput: the library's data path and loop against a bare torch loop, same model, same run.

    python benchmarks/bench_train.py                  # CPU: 100,000 rows, 600 steps of 512, 5 repeats
    python benchmarks/bench_train.py --steps 500      # quicker

A training set of ``--rows`` rows (the demo spec's features, labels from a random linear teacher) is written
as a Delta table before any timing. Then, alternating, ``--repeats`` times each:

* ``loop``: ``read_training_rows`` and ``FeatureState.featurize`` (Delta → Arrow → tensors; the feature state
  is fitted once, before timing, as a warm-started run reuses its champion's) and ``train`` (seeded
  permutation and gather per batch, AdamW, gradient clipping, per-epoch validation and early-stopping
  bookkeeping) for ``--steps`` steps;
* ``bare``: the same model (same seed), AdamW, clipping and loss over the same training tensors already in
  memory, contiguous slices, no shuffling, no validation, nothing else.

``loop_samples_per_s`` is what the loop reports (rows over its training-step time); ``ratio`` divides it by
the bare loop's rate (target >= 0.9). ``loop_end_to_end_samples_per_s`` also counts reading the Delta table,
the split, model set-up and validation passes. Medians over the repeats. With CUDA, the same comparison runs
on the GPU with bf16 autocast and a large batch (``gpu``); without it, ``gpu`` is null.

The language-model case (``lm``) does the same for the ``causal_lm`` built-in on ``--lm-rows`` seeded
synthetic sentences (byte tokenizer, ``--lm-length`` tokens, ``--lm-batch-size`` rows a step): the loop's
``lm_loop_tokens_per_s`` (real tokens trained on per second of training steps) beside a bare torch loop of the
same model on the same tensors, next-token cross-entropy over the mask (``lm_bare_tokens_per_s``);
``lm_ratio`` targets >= 0.9.

Result: ``benchmarks/results/train.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
import yaml
from _common import write_result
from deltalake import write_deltalake

from rt_training.features.state import FeatureState, fit_feature_state
from rt_training.spec import PipelineSpec, load_spec, parse_spec
from rt_training.training.data import TrainingTensors, read_training_rows, tensors_from_arrow
from rt_training.training.loop import train
from rt_training.training.models import build_model
from rt_training.training.teacher import LinearTeacher

TARGET_RATIO = 0.9
VALIDATION_FRACTION = 0.05
LM_SPEC = """
name: bench_lm
source: {topic: bench_lm}
schema:
  id_field: id
  time_field: at
  fields:
    id: {type: string}
    at: {type: timestamp}
    text: {type: text}
features:
  text: [{name: text, tokenizer: {kind: byte}, max_length: LENGTH}]
label: {field: text, kind: language_model}
model: {builtin: causal_lm, d_model: 128, n_layers: 2, n_heads: 4}
training: {batch_size: BATCH, learning_rate: 0.001, epochs: 1000, early_stopping_patience: 1000}
"""
WORDS = [
    "market",
    "team",
    "vote",
    "storm",
    "city",
    "court",
    "rates",
    "energy",
    "league",
    "film",
    "study",
    "launch",
    "bank",
    "coach",
    "river",
    "summit",
    "the",
    "a",
    "of",
    "in",
    "on",
    "for",
    "to",
    "with",
    "after",
    "over",
    "new",
    "record",
    "early",
    "late",
    "big",
    "small",
    "first",
    "final",
]


def bench_spec(batch_size: int) -> PipelineSpec:
    spec = load_spec()
    policy = spec.training.model_copy(
        update={"batch_size": batch_size, "epochs": 1000, "early_stopping_patience": 1000}
    )
    return spec.model_copy(update={"training": policy})


def run_loop(
    uri: str, spec: PipelineSpec, state: FeatureState, steps: int, device: torch.device
) -> dict[str, float]:
    start = time.perf_counter()
    data = tensors_from_arrow(read_training_rows(uri, 0, spec), spec, state)
    result = train(
        spec, state, *data.split(VALIDATION_FRACTION, seed=0), device=device, max_steps=steps, log_every=0
    )
    wall = time.perf_counter() - start
    rows = result.steps * spec.training.batch_size
    return {
        "samples_per_s": result.samples_per_s,
        "end_to_end_samples_per_s": rows / wall,
        "steps": result.steps,
    }


def run_bare(
    data: TrainingTensors, spec: PipelineSpec, state: FeatureState, steps: int, device: torch.device
) -> dict[str, float]:
    policy, batch = spec.training, spec.training.batch_size
    torch.manual_seed(policy.seed)
    model = build_model(spec, state).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=policy.learning_rate, weight_decay=policy.weight_decay
    )
    inputs = {k: v.to(device) for k, v in data.inputs.items()}
    label = data.label.to(device)
    per_epoch = len(label) // batch
    autocast = device.type == "cuda"
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        lo = (step % per_epoch) * batch
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model({k: v[lo : lo + batch] for k, v in inputs.items()})
        loss = F.binary_cross_entropy_with_logits(out.float(), label[lo : lo + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), policy.grad_clip)
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"samples_per_s": steps * batch / (time.perf_counter() - start)}


def compare(uri: str, batch_size: int, steps: int, repeats: int, device: torch.device) -> dict[str, Any]:
    spec = bench_spec(batch_size)
    rows = read_training_rows(uri, 0, spec)
    state = fit_feature_state(spec, rows, None, cold_start=True, seed=spec.training.seed)
    train_part, _ = tensors_from_arrow(rows, spec, state).split(VALIDATION_FRACTION, seed=0)
    run_loop(uri, spec, state, min(steps, 50), device)  # warm-up: lazy imports, allocator, kernels
    run_bare(train_part, spec, state, min(steps, 50), device)
    loops, bares = [], []
    for _ in range(repeats):
        loops.append(run_loop(uri, spec, state, steps, device))
        bares.append(run_bare(train_part, spec, state, steps, device))
    loop_rate = statistics.median(r["samples_per_s"] for r in loops)
    bare_rate = statistics.median(r["samples_per_s"] for r in bares)
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "loop_samples_per_s": round(loop_rate),
        "bare_samples_per_s": round(bare_rate),
        "ratio": round(loop_rate / bare_rate, 3),
        "loop_end_to_end_samples_per_s": round(
            statistics.median(r["end_to_end_samples_per_s"] for r in loops)
        ),
        "loop_samples_per_s_each": [round(r["samples_per_s"]) for r in loops],
        "bare_samples_per_s_each": [round(r["samples_per_s"]) for r in bares],
    }


def lm_sentences(rows: int, seed: int) -> pa.Table:
    """Seeded headline-like sentences of 4-14 words (no pattern worth learning: this measures speed)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 15, rows)
    words = np.array(WORDS)[rng.integers(0, len(WORDS), int(lengths.sum()))]
    ends = np.cumsum(lengths)
    texts = [" ".join(words[e - n : e]) for e, n in zip(ends, lengths, strict=True)]
    at = np.datetime64("2026-01-01T00:00:00", "us") + np.arange(rows) * np.timedelta64(1, "s")
    return pa.table(
        {
            "id": [str(i) for i in range(rows)],
            "at": pa.array(at, pa.timestamp("us", tz="UTC")),
            "text": pa.array(texts, pa.string()),
        }
    )


def lm_bare(data: TrainingTensors, spec: PipelineSpec, state: FeatureState, steps: int) -> float:
    """Tokens/s of a plain loop over contiguous slices: the model, AdamW, clipping, masked next-token loss."""
    policy, batch, field = spec.training, spec.training.batch_size, spec.label.field
    torch.manual_seed(policy.seed)
    model = build_model(spec, state)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=policy.learning_rate, weight_decay=policy.weight_decay
    )
    ids, mask = data.inputs[field], data.inputs[field + "__mask"]
    per_epoch, tokens = len(ids) // batch, 0
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        lo = (step % per_epoch) * batch
        x, m = ids[lo : lo + batch], mask[lo : lo + batch]
        logits = model({field: x, field + "__mask": m})
        keep = m[:, 1:].float()
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
        )
        loss = (nll * keep.reshape(-1)).sum() / keep.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), policy.grad_clip)
        optimizer.step()
        tokens += int(m.sum())
    return tokens / (time.perf_counter() - start)


def compare_lm(rows: int, length: int, batch_size: int, steps: int, repeats: int) -> dict[str, Any]:
    spec = parse_spec(
        yaml.safe_load(LM_SPEC.replace("LENGTH", str(length)).replace("BATCH", str(batch_size)))
    )
    table = lm_sentences(rows, seed=1)
    state = fit_feature_state(spec, table, None, cold_start=True, seed=0)
    data = tensors_from_arrow(table, spec, state)
    train_part, valid_part = data.split(VALIDATION_FRACTION, seed=0)

    def loop(n: int) -> float:
        result = train(spec, state, train_part, valid_part, max_steps=n, log_every=0)
        assert result.tokens_per_s is not None
        return result.tokens_per_s

    loop(min(steps, 5)), lm_bare(train_part, spec, state, min(steps, 5))  # warm-up
    loops, bares = [], []
    for _ in range(repeats):
        loops.append(loop(steps))
        bares.append(lm_bare(train_part, spec, state, steps))
    loop_rate, bare_rate = statistics.median(loops), statistics.median(bares)
    return {
        "lm_rows": rows,
        "lm_length": length,
        "lm_batch_size": batch_size,
        "lm_steps": steps,
        "lm_model": spec.model.model_dump(mode="json", include={"builtin", "d_model", "n_layers", "n_heads"}),
        "lm_loop_tokens_per_s": round(loop_rate),
        "lm_bare_tokens_per_s": round(bare_rate),
        "lm_ratio": round(loop_rate / bare_rate, 3),
        "lm_meets_target": loop_rate / bare_rate >= TARGET_RATIO,
        "lm_loop_tokens_per_s_each": [round(r) for r in loops],
        "lm_bare_tokens_per_s_each": [round(r) for r in bares],
    }


def summary(result: dict[str, Any]) -> str:
    loop, bare = result["loop_samples_per_s"], result["bare_samples_per_s"]
    return f"loop {loop:,} vs bare {bare:,} rows/s, ratio {result['ratio']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--gpu-batch-size", type=int, default=16_384)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    parser.add_argument("--lm-rows", type=int, default=8_000)
    parser.add_argument("--lm-length", type=int, default=64)
    parser.add_argument("--lm-batch-size", type=int, default=32)
    parser.add_argument("--lm-steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = load_spec()
    with tempfile.TemporaryDirectory() as tmp:
        uri = str(Path(tmp) / "training_set")
        write_deltalake(uri, LinearTeacher(spec, seed=3).table(args.rows, seed=1))
        cpu = compare(uri, args.batch_size, args.steps, args.repeats, torch.device("cpu"))
        print(f"cpu: {summary(cpu)}")
        lm = compare_lm(args.lm_rows, args.lm_length, args.lm_batch_size, args.lm_steps, args.repeats)
        print(
            f"lm: loop {lm['lm_loop_tokens_per_s']:,} vs bare {lm['lm_bare_tokens_per_s']:,} tokens/s, ratio {lm['lm_ratio']}"
        )
        gpu = None
        if torch.cuda.is_available():
            gpu = compare(uri, args.gpu_batch_size, args.steps, args.repeats, torch.device("cuda", 0))
            print(f"gpu: {summary(gpu)}")

    path = write_result(
        "train",
        {
            "rows": args.rows,
            "model": spec.model.model_dump(mode="json"),
            "torch_threads": args.threads,
            "validation_fraction": VALIDATION_FRACTION,
            "target_ratio": TARGET_RATIO,
            **{k: v for k, v in cpu.items() if k != "device"},
            "meets_target": cpu["ratio"] >= TARGET_RATIO,
            **lm,
            "gpu": gpu,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
