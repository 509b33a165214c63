"""Training throughput: the library's data path and loop against a bare torch loop, same model, same run.

    python benchmarks/bench_train.py                  # CPU: 100,000 rows, 600 steps of 512, 5 repeats
    python benchmarks/bench_train.py --steps 500      # quicker

A training set of ``--rows`` rows (the demo spec's features, labels from a random linear teacher) is written
as a Delta table before any timing. Then, alternating, ``--repeats`` times each:

* ``loop``: ``read_training_set`` (Delta → Arrow → tensors) and ``train`` (seeded permutation and gather per
  batch, AdamW, gradient clipping, per-epoch validation and early-stopping bookkeeping) for ``--steps`` steps;
* ``bare``: the same model (same seed), AdamW, clipping and loss over the same training tensors already in
  memory, contiguous slices, no shuffling, no validation, nothing else.

``loop_samples_per_s`` is what the loop reports (rows over its training-step time); ``ratio`` divides it by
the bare loop's rate (target >= 0.9). ``loop_end_to_end_samples_per_s`` also counts reading the Delta table,
the split, model set-up and validation passes. Medians over the repeats. With CUDA, the same comparison runs
on the GPU with bf16 autocast and a large batch (``gpu``); without it, ``gpu`` is null.

Result: ``benchmarks/results/train.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import write_result
from deltalake import write_deltalake

from rt_training.spec import PipelineSpec, load_spec
from rt_training.training.data import TrainingTensors, read_training_set
from rt_training.training.loop import train
from rt_training.training.models import build_model
from rt_training.training.teacher import LinearTeacher

TARGET_RATIO = 0.9
VALIDATION_FRACTION = 0.05


def bench_spec(batch_size: int) -> PipelineSpec:
    spec = load_spec()
    policy = spec.training.model_copy(
        update={"batch_size": batch_size, "epochs": 1000, "early_stopping_patience": 1000}
    )
    return spec.model_copy(update={"training": policy})


def run_loop(uri: str, spec: PipelineSpec, steps: int, device: torch.device) -> dict[str, float]:
    start = time.perf_counter()
    data = read_training_set(uri, 0, spec)
    result = train(
        spec, *data.split(VALIDATION_FRACTION, seed=0), device=device, max_steps=steps, log_every=0
    )
    wall = time.perf_counter() - start
    rows = result.steps * spec.training.batch_size
    return {
        "samples_per_s": result.samples_per_s,
        "end_to_end_samples_per_s": rows / wall,
        "steps": result.steps,
    }


def run_bare(data: TrainingTensors, spec: PipelineSpec, steps: int, device: torch.device) -> dict[str, float]:
    policy, batch = spec.training, spec.training.batch_size
    torch.manual_seed(policy.seed)
    model = build_model(spec).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=policy.learning_rate, weight_decay=policy.weight_decay
    )
    num, cat, label = data.numeric.to(device), data.categorical.to(device), data.label.to(device)
    per_epoch = len(label) // batch
    autocast = device.type == "cuda"
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        lo = (step % per_epoch) * batch
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(num[lo : lo + batch], cat[lo : lo + batch])
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
    train_part, _ = read_training_set(uri, 0, spec).split(VALIDATION_FRACTION, seed=0)
    run_loop(uri, spec, min(steps, 50), device)  # warm-up: lazy imports, allocator, kernels
    run_bare(train_part, spec, min(steps, 50), device)
    loops, bares = [], []
    for _ in range(repeats):
        loops.append(run_loop(uri, spec, steps, device))
        bares.append(run_bare(train_part, spec, steps, device))
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = load_spec()
    with tempfile.TemporaryDirectory() as tmp:
        uri = str(Path(tmp) / "training_set")
        write_deltalake(uri, LinearTeacher(spec, seed=3).table(args.rows, seed=1))
        cpu = compare(uri, args.batch_size, args.steps, args.repeats, torch.device("cpu"))
        print(f"cpu: {summary(cpu)}")
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
            "gpu": gpu,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
