"""Text tokenizers: byte ids from Arrow buffers, BPE / WordPiece trained reproducibly, factory tokenizers."""

from __future__ import annotations

import hashlib
import json
import os
import string
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rt_training.features.tokenizers import (
    BYTE_VOCAB_SIZE,
    ByteTokenizer,
    FactoryResolutionError,
    FactoryTokenizer,
    HFTokenizer,
    TextTokenizer,
    TokenizerError,
    fit_tokenizer,
    tokenizer_from_dict,
)
from rt_training.spec.models import TokenizerSpec

REPO_ROOT = Path(__file__).resolve().parents[1]

SUBJECTS = [
    "The council",
    "Maria Sánchez",
    "The Zürich team",
    "A café owner",
    "Officials",
    "The São Paulo office",
]
VERBS = ["approved", "rejected", "reported", "questioned", "announced", "delayed", "won't discuss"]
OBJECTS = [
    "the budget",
    "a new bridge",
    "the naïve plan",
    "record profits",
    "the river project",
    "higher fees",
]
TAILS = [
    "after a long debate",
    "on Tuesday",
    "despite protests",
    "with a 3.5% increase",
    "for $1,200 a month",
    "\u201csooner than expected\u201d",
]
ENDINGS = [".", "!", "?", ". 🎉", "; more soon."]


def sentences(n: int, seed: int) -> list[str]:
    """Seeded news-like sentences with punctuation, numbers, accents, curly quotes and an emoji."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
        if rng.random() < 0.7:
            parts.append(rng.choice(TAILS))
        out.append(" ".join(parts) + rng.choice(ENDINGS))
    return out


def bert_words(text: str) -> list[str]:
    """Whitespace-separated chunks split into runs of non-punctuation and single punctuation marks."""
    words: list[str] = []
    for chunk in text.split():
        run = ""
        for char in chunk:
            if char in string.punctuation or unicodedata.category(char).startswith("P"):
                words.extend([run, char] if run else [char])
                run = ""
            else:
                run += char
        if run:
            words.append(run)
    return words


def byte_reference(texts: list[str | None], max_length: int, truncation: str) -> np.ndarray:
    """Row by row, in plain Python: what the byte tokenizer must produce."""
    rows = []
    for text in texts:
        row = [0] * max_length
        if text is not None:
            data = text.encode()
            keep = max_length - 2
            data = data[:keep] if truncation == "right" else data[len(data) - min(len(data), keep) :]
            row[: len(data) + 2] = [2, *(4 + b for b in data), 3]
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(len(texts), max_length)


# --- byte ---------------------------------------------------------------------------------------------------


def test_byte_ids_exact_with_nulls_and_empty_text():
    ids, mask = ByteTokenizer().encode_batch(pa.array(["hé", None, "", "😀"]), max_length=7)
    assert ids.dtype == np.int64 and mask.dtype == np.bool_
    assert ids.tolist() == [
        [2, 108, 199, 173, 3, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [2, 3, 0, 0, 0, 0, 0],
        [2, 244, 163, 156, 132, 3, 0],
    ]
    assert mask.tolist() == [
        [True] * 5 + [False] * 2,
        [False] * 7,
        [True] * 2 + [False] * 5,
        [True] * 6 + [False],
    ]
    assert ByteTokenizer().vocab_size == BYTE_VOCAB_SIZE == 260


def test_byte_truncation_keeps_bos_and_eos_on_both_sides():
    texts = pa.array(["abcdef😀", "ab"])
    right, right_mask = ByteTokenizer().encode_batch(texts, max_length=6, truncation="right")
    left, left_mask = ByteTokenizer().encode_batch(texts, max_length=6, truncation="left")
    assert right.tolist() == [[2, 101, 102, 103, 104, 3], [2, 101, 102, 3, 0, 0]]
    assert left.tolist() == [[2, 244, 163, 156, 132, 3], [2, 101, 102, 3, 0, 0]]
    assert right_mask.sum(axis=1).tolist() == left_mask.sum(axis=1).tolist() == [6, 4]
    assert ByteTokenizer().decode(left[0]) == "😀"
    only_specials, _ = ByteTokenizer().encode_batch(texts, max_length=2)
    assert only_specials.tolist() == [[2, 3], [2, 3]]


@pytest.mark.parametrize("truncation", ["right", "left"])
@pytest.mark.parametrize("max_length", [2, 3, 9, 40])
def test_byte_matches_row_by_row_reference_on_sliced_chunked_and_large_arrays(max_length, truncation):
    rng = np.random.default_rng(7)
    alphabet = [*"abc xyz", "é", "ß", "中", "😀", "\n"]
    texts: list[str | None] = [
        None if rng.random() < 0.15 else "".join(rng.choice(alphabet, size=rng.integers(0, 30)))
        for _ in range(200)
    ]
    expected = byte_reference(texts[50:], max_length, truncation)
    tokenizer = ByteTokenizer()
    for array in (
        pa.array(texts).slice(50),
        pa.chunked_array([pa.array(texts[50:120]), pa.array(texts[120:])]),
        pa.array(texts[50:], type=pa.large_string()),
    ):
        ids, mask = tokenizer.encode_batch(array, max_length, truncation)
        assert ids.shape == mask.shape == (150, max_length)
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_array_equal(mask, expected != 0)


def test_byte_round_trip_of_non_ascii_text():
    texts = ["naïve café", "Zürich → São Paulo", "emoji 🎉🚀 and 中文", "tab\tand\nnewline", ""]
    ids, _ = ByteTokenizer().encode_batch(pa.array(texts), max_length=64)
    assert [ByteTokenizer().decode(row) for row in ids] == texts


def test_encode_batch_rejects_a_non_string_array_and_a_too_short_length():
    with pytest.raises(TypeError, match="got type int64"):
        ByteTokenizer().encode_batch(pa.array([1, 2]), max_length=8)
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        ByteTokenizer().encode_batch(pa.array(["a"]), max_length=1)
    with pytest.raises(ValueError, match="truncation must be 'right' or 'left'"):
        ByteTokenizer().encode_batch(pa.array(["a"]), max_length=8, truncation="middle")


# --- bpe / wordpiece ----------------------------------------------------------------------------------------

TRAIN = sentences(400, seed=1)
HELD_OUT = sentences(300, seed=2)


@pytest.fixture(scope="module")
def bpe() -> TextTokenizer:
    return fit_tokenizer(TokenizerSpec(kind="bpe", vocab_size=400, min_frequency=2), pa.array(TRAIN), seed=0)


@pytest.fixture(scope="module")
def wordpiece() -> TextTokenizer:
    return fit_tokenizer(
        TokenizerSpec(kind="wordpiece", vocab_size=300, min_frequency=2), pa.array(TRAIN), seed=0
    )


def test_bpe_round_trip_is_exact_on_held_out_sentences(bpe):
    assert isinstance(bpe, HFTokenizer) and bpe.vocab_size == 400
    assert [bpe.tokenizer.id_to_token(i) for i in range(4)] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    ids, mask = bpe.encode_batch(pa.array(HELD_OUT), max_length=128)
    assert ids.shape == (300, 128)
    assert (ids[:, 0] == 2).all() and not (ids[mask] == 1).any()
    lengths = mask.sum(axis=1)
    assert (ids[np.arange(300), lengths - 1] == 3).all() and lengths.max() < 128
    assert [bpe.decode(row) for row in ids] == HELD_OUT
    # merges were learned: 5,799 tokens for 16,830 bytes (measured), well under half
    assert (lengths - 2).sum() < 0.5 * sum(len(text.encode()) for text in HELD_OUT)


def test_bpe_lowercase_round_trip_gives_the_lowercased_text():
    lower = fit_tokenizer(TokenizerSpec(kind="bpe", vocab_size=350, lowercase=True), pa.array(TRAIN), seed=0)
    ids, _ = lower.encode_batch(pa.array(HELD_OUT), max_length=128)
    assert [lower.decode(row) for row in ids] == [text.lower() for text in HELD_OUT]


def test_wordpiece_round_trip_gives_words_and_punctuation_joined_by_spaces(wordpiece):
    ids, mask = wordpiece.encode_batch(pa.array(HELD_OUT), max_length=128)
    assert not (ids[mask] == 1).any()  # every character of the held-out text was seen in training
    assert [wordpiece.decode(row) for row in ids] == [" ".join(bert_words(text)) for text in HELD_OUT]
    assert wordpiece.decode(ids[0]) != HELD_OUT[0]  # whitespace before punctuation is not kept


def test_wordpiece_unknown_character_becomes_unk(wordpiece):
    ids, _ = wordpiece.encode_batch(pa.array(["The council ☃ approved"]), max_length=16)
    tokens = [wordpiece.tokenizer.id_to_token(i) for i in ids[0] if i != 0]
    assert tokens[0] == "[BOS]" and tokens[-1] == "[EOS]" and tokens.count("[UNK]") == 1
    assert wordpiece.decode(ids[0]) == "The council approved"


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_trained_truncation_nulls_and_exact_length(kind, bpe, wordpiece):
    tokenizer = bpe if kind == "bpe" else wordpiece
    texts = [HELD_OUT[0], None, HELD_OUT[1], ""]
    full, full_mask = tokenizer.encode_batch(pa.array(texts), max_length=200)
    contents = [row[1 : m.sum() - 1] for row, m in zip(full, full_mask, strict=True)]
    assert len(contents[0]) > 6 and len(contents[2]) > 6
    for truncation in ("right", "left"):
        ids, mask = tokenizer.encode_batch(pa.array(texts), max_length=8, truncation=truncation)
        assert ids.shape == mask.shape == (4, 8)
        for row, row_mask, content, text in zip(ids, mask, contents, texts, strict=True):
            if text is None:
                assert not row.any() and not row_mask.any()
                continue
            kept = content[:6] if truncation == "right" else content[len(content) - min(len(content), 6) :]
            expected = [2, *kept, 3]
            assert row.tolist() == expected + [0] * (8 - len(expected))
            assert row_mask.tolist() == [True] * len(expected) + [False] * (8 - len(expected))


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_special_tokens_written_in_text_are_encoded_as_text(kind, bpe, wordpiece):
    tokenizer = bpe if kind == "bpe" else wordpiece
    ids, mask = tokenizer.encode_batch(pa.array(["[PAD] [BOS] [EOS] [UNK]"]), max_length=64)
    inner = ids[0, 1 : mask[0].sum() - 1]
    assert inner.size > 4 and not np.isin(inner, [0, 2, 3]).any()
    if kind == "bpe":
        assert (inner >= 4).all()  # byte-level: no [UNK] either


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_to_dict_from_dict_gives_identical_ids(kind, bpe, wordpiece):
    tokenizer = bpe if kind == "bpe" else wordpiece
    restored = tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert restored.to_dict() == tokenizer.to_dict() and restored.vocab_size == tokenizer.vocab_size
    texts = pa.array([*HELD_OUT, None])
    for truncation in ("right", "left"):
        before = tokenizer.encode_batch(texts, 24, truncation)
        after = restored.encode_batch(texts, 24, truncation)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])


FIT_SNIPPET = """
import hashlib, json, sys
import pyarrow as pa
from rt_training.features.tokenizers import fit_tokenizer
from rt_training.spec.models import TokenizerSpec
texts = json.load(sys.stdin)
for kind, size in (("bpe", 400), ("wordpiece", 300)):
    tok = fit_tokenizer(TokenizerSpec(kind=kind, vocab_size=size), pa.array(texts), seed=0)
    print(hashlib.sha256(json.dumps(tok.to_dict(), sort_keys=True).encode()).hexdigest())
"""


def digest(tokenizer: TextTokenizer) -> str:
    return hashlib.sha256(json.dumps(tokenizer.to_dict(), sort_keys=True).encode()).hexdigest()


def test_training_is_reproducible_in_this_process_and_in_fresh_ones(bpe, wordpiece):
    """Hash-map order differs per process and per map: WordPiece without the sorted continuations varied."""
    again = [
        fit_tokenizer(TokenizerSpec(kind=kind, vocab_size=size), pa.array(TRAIN), seed=0)
        for kind, size in (("bpe", 400), ("wordpiece", 300))
    ]
    expected = [digest(bpe), digest(wordpiece)]
    assert [digest(t) for t in again] == expected
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", FIT_SNIPPET],
            input=json.dumps(TRAIN),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=120,
        )
        assert result.stdout.split() == expected


def test_training_ignores_nulls_and_needs_some_text():
    with_nulls = fit_tokenizer(
        TokenizerSpec(kind="bpe", vocab_size=400), pa.array([*TRAIN, None, None]), seed=0
    )
    plain = fit_tokenizer(TokenizerSpec(kind="bpe", vocab_size=400), pa.array(TRAIN), seed=0)
    assert digest(with_nulls) == digest(plain)
    with pytest.raises(TokenizerError, match=r"training texts are empty or all null \(2 rows\)"):
        fit_tokenizer(TokenizerSpec(kind="wordpiece"), pa.array([None, None], type=pa.string()), seed=0)


def test_byte_kind_and_restoring_unknown_kinds():
    tokenizer = fit_tokenizer(TokenizerSpec(kind="byte"), pa.array(["ignored"]), seed=3)
    assert isinstance(tokenizer, ByteTokenizer) and tokenizer.to_dict() == {"kind": "byte"}
    assert isinstance(tokenizer_from_dict({"kind": "byte"}), ByteTokenizer)
    with pytest.raises(TokenizerError, match="kind 'sentencepiece'"):
        tokenizer_from_dict({"kind": "sentencepiece"})
    with pytest.raises(TokenizerError, match="with 'tokenizer' \\(its JSON\\)"):
        tokenizer_from_dict({"kind": "bpe"})


# --- factory ------------------------------------------------------------------------------------------------

FACTORY_MODULE = "rt_tok_test_factories"
FACTORY_SOURCE = textwrap.dedent(
    """
    import pyarrow.compute as pc
    import tokenizers
    from tokenizers import models, pre_tokenizers

    from rt_training.features.tokenizers import ByteTokenizer

    NOT_CALLABLE = 3


    def word_level():
        vocab = {"<unk>": 0, "hello": 1, "world": 2, "!": 3}
        tokenizer = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        return tokenizer


    class Reversed:
        vocab_size = 260

        def encode_batch(self, texts, max_length, truncation="right"):
            return ByteTokenizer().encode_batch(pc.utf8_reverse(texts), max_length, truncation)

        def decode(self, ids):
            return ByteTokenizer().decode(ids)[::-1]

        def to_dict(self):
            return {"kind": "reversed"}


    def reversed_bytes():
        return Reversed()


    def wrong():
        return 42
    """
)


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / f"{FACTORY_MODULE}.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield FACTORY_MODULE
    sys.modules.pop(FACTORY_MODULE, None)


def test_factory_returning_a_hf_tokenizer_gets_ids_shifted_past_the_specials(factories):
    spec = TokenizerSpec(kind="factory", factory=f"{factories}:word_level")
    tokenizer = fit_tokenizer(spec, pa.array([], type=pa.string()), seed=0)
    assert isinstance(tokenizer, FactoryTokenizer) and tokenizer.vocab_size == 8
    ids, mask = tokenizer.encode_batch(pa.array(["hello world !", "hello there", None]), max_length=6)
    assert ids.tolist() == [[2, 5, 6, 7, 3, 0], [2, 5, 4, 3, 0, 0], [0] * 6]
    assert mask.sum(axis=1).tolist() == [5, 4, 0]
    assert tokenizer.decode(ids[0]) == "hello world !"
    assert tokenizer.to_dict() == {"kind": "factory", "factory": f"{factories}:word_level"}
    restored = tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    np.testing.assert_array_equal(
        restored.encode_batch(pa.array(["world hello"]), 6)[0], [[2, 6, 5, 3, 0, 0]]
    )


def test_factory_returning_a_protocol_object_is_used_as_it_is(factories):
    tokenizer = fit_tokenizer(
        TokenizerSpec(kind="factory", factory=f"{factories}:reversed_bytes"), pa.array([]), 0
    )
    ids, _ = tokenizer.encode_batch(pa.array(["abc"]), max_length=6)
    assert ids.tolist() == [[2, 103, 102, 101, 3, 0]]
    assert tokenizer.decode(ids[0]) == "abc" and tokenizer.vocab_size == 260
    assert tokenizer.to_dict() == {"kind": "factory", "factory": f"{factories}:reversed_bytes"}


def test_bad_factory_paths_say_what_is_wrong(factories):
    with pytest.raises(
        FactoryResolutionError,
        match=r"tokenizer\.factory 'rt_no_such_tok_pkg\.tok:make': cannot import module 'rt_no_such_tok_pkg\.tok'",
    ):
        FactoryTokenizer("rt_no_such_tok_pkg.tok:make")
    with pytest.raises(FactoryResolutionError, match=f"module '{factories}' has no attribute 'missing'"):
        FactoryTokenizer(f"{factories}:missing")
    with pytest.raises(
        FactoryResolutionError, match="is a int, not callable; point the spec at a function called with"
    ):
        FactoryTokenizer(f"{factories}:NOT_CALLABLE")
    with pytest.raises(TokenizerError, match=f"tokenizer.factory '{factories}:wrong' returned a int"):
        FactoryTokenizer(f"{factories}:wrong")
