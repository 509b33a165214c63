"""Text path throughput: a string column of a Delta table → token id and mask tensors, against the bare tokenizer.

    python benchmarks/bench_text.py                          # 100,000 sentences of 12-47 words, best of 5
    python benchmarks/bench_text.py --rows 20000 --repeats 3 # quicker

Seeded synthetic sentences (Zipf-distributed pseudo-words, capitals, commas, numbers) are written as a string
column to a Delta table in a temporary directory, and a feature state with a BPE tokenizer (``--vocab-size``) is
fitted on them before any timing. Measured, round-robin so each meets the same background load, best of ``--repeats``:

* ``delta_text_to_tensors`` with a feature state holding the BPE tokenizer (the path training takes): read the
  column (``DeltaTable.to_pyarrow_table``), :meth:`~rt_training.features.state.FeatureState.featurize`
  (``--max-length``, right truncation), ``torch.from_numpy`` → ``tokens_per_s`` (non-pad tokens, BOS/EOS
  included);
* the bare tokenizer: the Hugging Face tokenizer's own ``encode_batch`` and ``encode_batch_fast`` on the same
  texts already in memory as Python strings, set up to produce exactly the same tokens (``[BOS] $A [EOS]``
  template, truncation at ``--max-length``); the faster of the two is ``bare_tokens_per_s``. The JSON records
  that both paths produced the same ids;
* the same Delta path with the byte tokenizer (its tokens are UTF-8 bytes, so its tokens/s is not comparable).

Result: ``benchmarks/results/text.json``; ``ratio`` = tokens_per_s / bare_tokens_per_s, target
:data:`TARGET_RATIO`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import tokenizers
import torch
from deltalake import DeltaTable, write_deltalake
from tokenizers.processors import TemplateProcessing

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

from rt_training.features.state import FeatureState, fit_feature_state
from rt_training.features.tokenizers import BOS_ID, EOS_ID, HFTokenizer
from rt_training.spec import PipelineSpec, parse_spec

TARGET_RATIO = 0.8
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ter",
    "an",
    "sul",
    "ve",
    "dor",
    "pi",
    "ne",
    "ra",
    "tho",
    "gen",
    "ul",
    "bri",
    "sa",
]


def sentences(rows: int, min_words: int, max_words: int, seed: int) -> list[str]:
    """Seeded sentences over 20,000 pseudo-words drawn with Zipf frequencies, like word use in news text."""
    rng = np.random.default_rng(seed)
    lexicon = np.array(
        ["".join(rng.choice(SYLLABLES, size=rng.integers(1, 5))) for _ in range(20_000)], dtype=object
    )
    lengths = rng.integers(min_words, max_words, size=rows)
    picks = lexicon[(rng.zipf(1.2, size=int(lengths.sum())) - 1) % lexicon.size]
    commas = rng.random(picks.size) < 0.06
    picks[commas] = picks[commas] + ","
    numbers = rng.random(picks.size) < 0.02
    picks[numbers] = rng.integers(0, 10_000, size=int(numbers.sum())).astype(str)
    out = []
    for words in np.split(picks, np.cumsum(lengths)[:-1]):
        out.append(" ".join(words).capitalize() + ".")
    return out


def text_spec(kind: str, vocab_size: int, max_length: int) -> PipelineSpec:
    """A one-text-feature language-model spec (what the text path needs; the label is not read here)."""
    return parse_spec(
        {
            "name": "bench_text",
            "source": {"topic": "bench_text"},
            "schema": {
                "id_field": "id",
                "time_field": "at",
                "fields": {"id": {"type": "int"}, "at": {"type": "timestamp"}, "text": {"type": "text"}},
            },
            "features": {
                "text": [
                    {
                        "name": "text",
                        "tokenizer": {"kind": kind, "vocab_size": vocab_size},
                        "max_length": max_length,
                    }
                ]
            },
            "label": {"field": "text", "kind": "language_model"},
            "model": {"builtin": "causal_lm"},
        }
    )


def delta_text_to_tensors(uri: str, state: FeatureState) -> tuple[torch.Tensor, torch.Tensor]:
    """The training path for text: the Delta table's text column → :meth:`FeatureState.featurize` (the fitted
    tokenizer, padding, truncation) → ``ids`` int64 ``[N, L]`` and ``mask`` bool tensors."""
    arrays = state.featurize(DeltaTable(uri).to_pyarrow_table(columns=["text"]))
    return torch.from_numpy(arrays["text"]), torch.from_numpy(arrays["text__mask"])


def bare_tokenizer(tokenizer: HFTokenizer, max_length: int) -> tokenizers.Tokenizer:
    """The trained Hugging Face tokenizer set up to give exactly the ids of ``encode_batch``, unpadded."""
    bare = tokenizers.Tokenizer.from_str(tokenizer.tokenizer.to_str())
    bare.encode_special_tokens = True
    bare.post_processor = TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS_ID), ("[EOS]", EOS_ID)]
    )
    bare.enable_truncation(max_length, direction="right")
    return bare


def best_of(stages: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall seconds of each stage over ``repeats`` round-robin rounds."""
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(repeats):
        for name, fn in stages.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--min-words", type=int, default=12)
    parser.add_argument("--max-words", type=int, default=48, help="exclusive")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts = sentences(args.rows, args.min_words, args.max_words, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_text_") as tmp:
        uri = str(Path(tmp) / "silver")
        write_deltalake(uri, pa.table({"id": np.arange(args.rows), "text": pa.array(texts, pa.string())}))
        table = DeltaTable(uri).to_pyarrow_table(columns=["text"])
        column = table.column("text")
        start = time.perf_counter()
        bpe_state = fit_feature_state(
            text_spec("bpe", args.vocab_size, args.max_length), table, None, cold_start=True, seed=args.seed
        )
        fit_s = time.perf_counter() - start
        bpe = bpe_state.tokenizer("text")
        assert isinstance(bpe, HFTokenizer)
        byte_state = fit_feature_state(
            text_spec("byte", args.vocab_size, args.max_length), table, None, cold_start=True, seed=args.seed
        )
        bare = bare_tokenizer(bpe, args.max_length)
        print(
            f"{args.rows} sentences, mean {np.mean([len(t) for t in texts]):.0f} chars; "
            f"bpe vocab {bpe.vocab_size} fitted in {fit_s:.2f} s"
        )

        ids, mask = delta_text_to_tensors(uri, bpe_state)
        encodings = bare.encode_batch(texts)
        same_ids = all(
            encoding.ids == row[: len(encoding.ids)].tolist() and len(encoding.ids) == int(m.sum())
            for encoding, row, m in zip(encodings, ids.numpy(), mask.numpy(), strict=True)
        )
        tokens = int(mask.sum())
        byte_tokens = int(delta_text_to_tensors(uri, byte_state)[1].sum())
        best = best_of(
            {
                "delta_to_tensors_bpe": lambda: delta_text_to_tensors(uri, bpe_state),
                "bare_encode_batch": lambda: bare.encode_batch(texts),
                "bare_encode_batch_fast": lambda: bare.encode_batch_fast(texts),
                "delta_read": lambda: DeltaTable(uri).to_pyarrow_table(columns=["text"]),
                "encode_batch_bpe_in_memory": lambda: bpe.encode_batch(column, args.max_length, "right"),
                "delta_to_tensors_byte": lambda: delta_text_to_tensors(uri, byte_state),
            },
            args.repeats,
        )

    bare_s = min(best["bare_encode_batch"], best["bare_encode_batch_fast"])
    tokens_per_s = tokens / best["delta_to_tensors_bpe"]
    bare_tokens_per_s = tokens / bare_s
    ratio = tokens_per_s / bare_tokens_per_s
    for name, seconds in best.items():
        print(f"{name:28s} best {seconds:.3f} s")
    print(
        f"tokens {tokens:,}: {tokens_per_s:,.0f} tokens/s vs bare {bare_tokens_per_s:,.0f} tokens/s, ratio "
        f"{ratio:.2f} (target {TARGET_RATIO}); same ids: {same_ids}; byte {byte_tokens / best['delta_to_tensors_byte']:,.0f} tokens/s"
    )
    path = write_result(
        "text",
        {
            "config": vars(args),
            "tokenizers_version": tokenizers.__version__,
            "bpe_vocab_size": bpe.vocab_size,
            "fit_s": fit_s,
            "tokens": tokens,
            "tokens_per_s": tokens_per_s,
            "bare_tokens_per_s": bare_tokens_per_s,
            "bare_method": "encode_batch"
            if best["bare_encode_batch"] <= best["bare_encode_batch_fast"]
            else "encode_batch_fast",
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
            "same_ids_as_bare": same_ids,
            "byte_tokens": byte_tokens,
            "byte_tokens_per_s": byte_tokens / best["delta_to_tensors_byte"],
            "best_seconds": best,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
