"""Text to token ids: a byte tokenizer, BPE / WordPiece trained with Hugging Face ``tokenizers``, or a user's own.

Every tokenizer shares the same four special ids, whatever its kind: ``0 = [PAD]``, ``1 = [UNK]``,
``2 = [BOS]``, ``3 = [EOS]``. :meth:`TextTokenizer.encode_batch` turns an Arrow string array into a padded
``[N, max_length]`` int64 id matrix and its bool mask in one call: each non-null text is ``[BOS] tokens [EOS]``
followed by padding, truncated to fit (``right`` keeps the start of the text, ``left`` its end; BOS and EOS are
always kept); a null text is all padding with an all-False mask.

Kinds (``TokenizerSpec.kind``):

* ``byte``: id ``4 + b`` for each UTF-8 byte ``b`` (vocabulary 260). Encoding works on the Arrow array's
  offsets and data buffers with numpy, with no Python work per text. Left truncation can cut a multi-byte
  character; :meth:`ByteTokenizer.decode` replaces the broken bytes with U+FFFD.
* ``bpe``: byte-level BPE (GPT-2 style pre-tokenization; every byte is in the alphabet, so no ``[UNK]``, and
  the vocabulary has at least 260 entries whatever ``vocab_size`` asks). ``decode(encode(t))`` gives back ``t``
  exactly (``t.lower()`` with ``lowercase``).
* ``wordpiece``: WordPiece over words split at whitespace and punctuation (BERT's pre-tokenizer). Whitespace
  is not kept: ``decode`` joins the words and punctuation marks with single spaces
  (``"Rates rose, again."`` decodes to ``"Rates rose , again ."``); a word with a character the vocabulary
  lacks becomes ``[UNK]`` and decodes to nothing.
* ``factory``: ``TokenizerSpec.factory`` names a callable, called with no arguments, that returns a
  ``tokenizers.Tokenizer`` or an object with the :class:`TextTokenizer` protocol. A ``tokenizers.Tokenizer``
  whose tokens 0-3 are ``[PAD] [UNK] [BOS] [EOS]`` keeps its ids; any other has its ids shifted by 4 (its own
  special tokens become ordinary ones). It is saved as its import path and rebuilt by calling it again.

Training (``bpe`` / ``wordpiece``) runs in Rust on the non-null texts (a seeded sample of
:data:`MAX_FIT_TEXTS` when there are more). It is reproducible: word counts do not depend on the input order,
and the one source of run-to-run variation in ``tokenizers`` 0.23 (WordPiece's ``##`` continuation
characters get ids in hash-map order, and ids break ties between equally frequent merges: huggingface/tokenizers
issue 1794) is removed by registering those tokens, sorted, before training and turning them back into
ordinary vocabulary entries after it.
"""

from __future__ import annotations

import itertools
import json
import string
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from rt_training.spec.factory import FactoryResolutionError, resolve_factory
from rt_training.spec.models import TokenizerSpec

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
"""Special tokens in id order: ``SPECIAL_TOKENS[i]`` has id ``i`` in every tokenizer."""
NUM_SPECIAL = len(SPECIAL_TOKENS)
BYTE_VOCAB_SIZE = NUM_SPECIAL + 256
MAX_FIT_TEXTS = 1_000_000
"""A trained tokenizer learns from at most this many texts (a seeded sample of the non-null ones)."""

Truncation = Literal["right", "left"]
_FACTORY_EXPECTED = (
    "a function called with no arguments that returns a tokenizers.Tokenizer or an object with "
    "vocab_size, encode_batch, decode and to_dict (rt_training.features.tokenizers.TextTokenizer)"
)


class TokenizerError(ValueError):
    """A tokenizer that cannot be built or restored: bad factory result, nothing to train on, unknown kind."""


@runtime_checkable
class TextTokenizer(Protocol):
    """What a text feature needs from a tokenizer.

    ``vocab_size`` counts every id :meth:`encode_batch` can produce (the embedding rows a model needs), the
    four special ids included.
    """

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        ...

    def encode_batch(
        self, texts: pa.Array | pa.ChunkedArray, max_length: int, truncation: Truncation = "right"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids int64 ``[N, max_length]`` and mask bool ``[N, max_length]`` (see the module docstring)."""
        ...

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """The text of ``ids``, special ids dropped."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form that :func:`tokenizer_from_dict` restores."""
        ...


def _string_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous ``string`` or ``large_string`` array from what a caller passes."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if not isinstance(texts, pa.Array):
        raise TypeError(f"encode_batch takes a pyarrow string array, got {type(texts).__name__}")
    if pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type):
        return texts
    if pa.types.is_string_view(texts.type) or pa.types.is_null(texts.type):
        return texts.cast(pa.string())
    raise TypeError(
        f"encode_batch takes a pyarrow string array, got type {texts.type}; a text feature's field must be a "
        "string or text field"
    )


def _check_args(max_length: int, truncation: str) -> None:
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (room for [BOS] and [EOS]), got {max_length}")
    if truncation not in ("right", "left"):
        raise ValueError(f"truncation must be 'right' or 'left', got {truncation!r}")


def _pack(
    source: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    valid: np.ndarray,
    max_length: int,
    truncation: Truncation,
    shift: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Lay out ``[BOS] source[start : start + length] + shift [EOS]`` per row, truncated and padded, in one go.

    ``lengths`` is the content of each row before truncation (ignored where ``valid`` is False); at most
    ``max_length - 2`` content tokens are kept, from the start (``right``) or the end (``left``).
    """
    n = lengths.size
    kept = np.where(valid, np.minimum(lengths, max_length - 2), 0).astype(np.int64)
    first = starts.astype(np.int64)
    if truncation == "left":
        first = first + lengths.astype(np.int64) - kept
    total = int(kept.sum())
    before = np.cumsum(kept) - kept
    step = np.arange(total, dtype=np.int64)
    ids = np.zeros((n, max_length), dtype=np.int64)
    flat = ids.reshape(-1)
    flat[step + np.repeat(np.arange(n, dtype=np.int64) * max_length + 1 - before, kept)] = (
        source[step + np.repeat(first - before, kept)].astype(np.int64) + shift
    )
    rows = np.flatnonzero(valid)
    ids[rows, 0] = BOS_ID
    ids[rows, kept[rows] + 1] = EOS_ID
    used = np.where(valid, kept + 2, 0)
    mask = np.arange(max_length) < used[:, None]
    return ids, mask


class ByteTokenizer:
    """UTF-8 bytes as ids ``4 + byte``; nothing to fit.

    Examples
    --------
    >>> ids, mask = ByteTokenizer().encode_batch(pa.array(["hé", None]), max_length=6)
    >>> ids.tolist()
    [[2, 108, 199, 173, 3, 0], [0, 0, 0, 0, 0, 0]]
    >>> ByteTokenizer().decode(ids[0])
    'hé'
    """

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        """260: the four specials and 256 byte values."""
        return BYTE_VOCAB_SIZE

    def encode_batch(
        self, texts: pa.Array | pa.ChunkedArray, max_length: int, truncation: Truncation = "right"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode straight from the array's offsets and data buffers (see :class:`TextTokenizer`)."""
        _check_args(max_length, truncation)
        array = _string_array(texts)
        offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
        _, offsets_buffer, data_buffer = array.buffers()
        n = len(array)
        if n == 0:
            return np.zeros((0, max_length), np.int64), np.zeros((0, max_length), bool)
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[array.offset : array.offset + n + 1]
        data = (
            np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
        )
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        return _pack(data, offsets[:-1], np.diff(offsets), valid, max_length, truncation, NUM_SPECIAL)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """The UTF-8 text of the byte ids; specials dropped, broken characters as U+FFFD."""
        values = np.asarray(ids, dtype=np.int64)
        values = values[(values >= NUM_SPECIAL) & (values < BYTE_VOCAB_SIZE)]
        return (values - NUM_SPECIAL).astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "byte"}``."""
        return {"kind": self.kind}


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` behind the :class:`TextTokenizer` protocol.

    Parameters
    ----------
    tokenizer
        The tokenizer. If its tokens 0-3 are :data:`SPECIAL_TOKENS` its ids are used as they are, otherwise
        shifted by 4. Special tokens written in a text are encoded as text, never as specials.
    kind
        ``"bpe"`` or ``"wordpiece"`` (trained here, saved as JSON) or ``"factory"``.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer, kind: str) -> None:
        self.kind = kind
        self._tokenizer = tokenizer
        tokenizer.encode_special_tokens = True
        own = all(tokenizer.token_to_id(token) == i for i, token in enumerate(SPECIAL_TOKENS))
        self.shift = 0 if own else NUM_SPECIAL
        self._vocab_size = self.shift + tokenizer.get_vocab_size(with_added_tokens=True)
        self._encoders: dict[tuple[int, str], tokenizers.Tokenizer] = {}

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        """The wrapped tokenizer (no truncation or padding configured)."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary with its added tokens, plus 4 when its ids are shifted."""
        return self._vocab_size

    def _encoder(self, content: int, truncation: Truncation) -> tokenizers.Tokenizer:
        """A copy of the tokenizer that truncates to ``content`` tokens in Rust, so long texts cost no more."""
        key = (content, truncation)
        if key not in self._encoders:
            encoder = tokenizers.Tokenizer.from_str(self._tokenizer.to_str())
            encoder.encode_special_tokens = True
            encoder.enable_truncation(max(content, 1), stride=0, direction=truncation)
            self._encoders[key] = encoder
        return self._encoders[key]

    def encode_batch(
        self, texts: pa.Array | pa.ChunkedArray, max_length: int, truncation: Truncation = "right"
    ) -> tuple[np.ndarray, np.ndarray]:
        """One ``Tokenizer.encode_batch`` over the texts, then one numpy layout (see :class:`TextTokenizer`).

        The library hands back one ``Encoding`` per text; reading ``.ids`` from each (a list per text) is the
        only per-text Python work, and the only way ``tokenizers`` gives the ids out.
        """
        _check_args(max_length, truncation)
        array = _string_array(texts)
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        strings = pc.fill_null(array, "").to_pylist() if array.null_count else array.to_pylist()
        encodings = self._encoder(max_length - 2, truncation).encode_batch(strings, add_special_tokens=False)
        id_lists = [encoding.ids for encoding in encodings]
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        source = np.fromiter(
            itertools.chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum())
        )
        starts = np.cumsum(lengths) - lengths
        return _pack(source, starts, lengths, valid, max_length, truncation, self.shift)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """The tokenizer's own decoding of the non-special ids."""
        values = np.asarray(ids, dtype=np.int64)
        values = values[(values >= NUM_SPECIAL) & (values < self._vocab_size)] - self.shift
        return self._tokenizer.decode(values.tolist(), skip_special_tokens=True)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": kind, "tokenizer": <the tokenizer's JSON>}``."""
        return {"kind": self.kind, "tokenizer": self._tokenizer.to_str()}


class FactoryTokenizer:
    """A user's tokenizer from ``TokenizerSpec.factory``, saved as its import path.

    Parameters
    ----------
    path
        ``"package.module:function"``; the function is called with no arguments.

    Raises
    ------
    FactoryResolutionError
        When the path cannot be imported or is not callable (the message starts with ``tokenizer.factory``).
    TokenizerError
        When the callable returns something that is neither a ``tokenizers.Tokenizer`` nor a
        :class:`TextTokenizer`.
    """

    kind = "factory"

    def __init__(self, path: str) -> None:
        self.path = path
        made = resolve_factory(path, setting="tokenizer.factory", expected=_FACTORY_EXPECTED)()
        if isinstance(made, tokenizers.Tokenizer):
            self._inner: TextTokenizer = HFTokenizer(made, kind=self.kind)
        elif isinstance(made, TextTokenizer):
            self._inner = made
        else:
            raise TokenizerError(
                f"tokenizer.factory {path!r} returned a {type(made).__name__}; it must return a "
                "tokenizers.Tokenizer or an object with vocab_size, encode_batch, decode and to_dict "
                "(rt_training.features.tokenizers.TextTokenizer)"
            )

    @property
    def inner(self) -> TextTokenizer:
        """The tokenizer the factory returned (a ``tokenizers.Tokenizer`` wrapped in :class:`HFTokenizer`)."""
        return self._inner

    @property
    def vocab_size(self) -> int:
        """The user tokenizer's ``vocab_size``."""
        return self._inner.vocab_size

    def encode_batch(
        self, texts: pa.Array | pa.ChunkedArray, max_length: int, truncation: Truncation = "right"
    ) -> tuple[np.ndarray, np.ndarray]:
        """The user tokenizer's ``encode_batch``."""
        _check_args(max_length, truncation)
        return self._inner.encode_batch(texts, max_length, truncation)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """The user tokenizer's ``decode``."""
        return self._inner.decode(ids)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "factory", "factory": path}``."""
        return {"kind": self.kind, "factory": self.path}


def _training_texts(texts: pa.Array | pa.ChunkedArray, seed: int) -> list[str]:
    """The non-null texts, or a seeded sample of :data:`MAX_FIT_TEXTS` of them in their original order."""
    array = _string_array(texts).drop_null()
    if len(array) > MAX_FIT_TEXTS:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(len(array), size=MAX_FIT_TEXTS, replace=False))
        array = array.take(pa.array(chosen))
    return array.to_pylist()


def _fit_bpe(spec: TokenizerSpec, texts: list[str]) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK_ID]))
    if spec.lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    return tokenizer


def _fit_wordpiece(spec: TokenizerSpec, texts: list[str]) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS[UNK_ID]))
    if spec.lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    # Every "##c" the trainer could create, registered up front in sorted order so their ids (which break
    # ties between equally frequent merges) do not follow hash-map order. Whitespace never reaches a word and
    # ASCII punctuation is always a word of its own, so neither can continue one.
    joined = "\n".join(texts)
    if tokenizer.normalizer is not None:
        joined = tokenizer.normalizer.normalize_str(joined)
    never_continues = set(string.whitespace) | set(string.punctuation)
    continuations = ["##" + char for char in sorted(set(joined) - never_continues)]
    trainer = trainers.WordPieceTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *continuations],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    document = json.loads(tokenizer.to_str())
    document["added_tokens"] = [
        added for added in document["added_tokens"] if added["content"] in SPECIAL_TOKENS
    ]
    return tokenizers.Tokenizer.from_str(json.dumps(document))


def fit_tokenizer(spec: TokenizerSpec, texts: pa.Array | pa.ChunkedArray, seed: int) -> TextTokenizer:
    """The tokenizer ``spec`` describes, trained on ``texts`` where it is trained.

    Parameters
    ----------
    spec
        The text feature's tokenizer settings.
    texts
        The training texts (nulls ignored); unused for ``byte`` and ``factory``.
    seed
        Picks the sample when there are more than :data:`MAX_FIT_TEXTS` non-null texts; training itself is
        deterministic, so the same texts and seed give the same tokenizer, byte for byte.

    Returns
    -------
    TextTokenizer
        :class:`ByteTokenizer`, :class:`HFTokenizer` (``bpe``, ``wordpiece``) or :class:`FactoryTokenizer`.

    Raises
    ------
    TokenizerError
        ``bpe`` / ``wordpiece`` with no non-null text to train on, or a factory returning something unusable.
    FactoryResolutionError
        A ``factory`` path that cannot be imported or is not callable.
    """
    if spec.kind == "byte":
        return ByteTokenizer()
    if spec.kind == "factory":
        assert spec.factory is not None  # TokenizerSpec validates that kind factory names one
        return FactoryTokenizer(spec.factory)
    training = _training_texts(texts, seed)
    if not training:
        raise TokenizerError(
            f"cannot train a {spec.kind} tokenizer: the training texts are empty or all null "
            f"({len(texts)} rows); train on data with text in it or use tokenizer kind 'byte'"
        )
    trained = _fit_bpe(spec, training) if spec.kind == "bpe" else _fit_wordpiece(spec, training)
    wrong = [token for i, token in enumerate(SPECIAL_TOKENS) if trained.token_to_id(token) != i]
    if wrong:
        raise TokenizerError(
            f"the trained {spec.kind} tokenizer does not have {wrong} at ids {[SPECIAL_TOKENS.index(t) for t in wrong]}; "
            f"this version of tokenizers ({tokenizers.__version__}) orders special tokens differently"
        )
    return HFTokenizer(trained, kind=spec.kind)


def tokenizer_from_dict(data: dict[str, Any]) -> TextTokenizer:
    """Restore a tokenizer from :meth:`TextTokenizer.to_dict`; encodes exactly as the one saved.

    Raises
    ------
    TokenizerError
        An unknown kind or a missing entry.
    FactoryResolutionError
        A saved factory path that no longer imports.
    """
    kind = data.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind in ("bpe", "wordpiece") and isinstance(data.get("tokenizer"), str):
        return HFTokenizer(tokenizers.Tokenizer.from_str(data["tokenizer"]), kind=kind)
    if kind == "factory" and isinstance(data.get("factory"), str):
        return FactoryTokenizer(data["factory"])
    raise TokenizerError(
        f"cannot restore a tokenizer from {sorted(data)} (kind {kind!r}): expected kind 'byte', 'bpe' or "
        "'wordpiece' with 'tokenizer' (its JSON), or 'factory' with 'factory' (its import path); the saved "
        "feature state is damaged or from another version"
    )


__all__ = [
    "BOS_ID",
    "BYTE_VOCAB_SIZE",
    "EOS_ID",
    "MAX_FIT_TEXTS",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "ByteTokenizer",
    "FactoryResolutionError",
    "FactoryTokenizer",
    "HFTokenizer",
    "TextTokenizer",
    "TokenizerError",
    "fit_tokenizer",
    "tokenizer_from_dict",
]
