"""Topic groups that trend over event time, and headline-like texts drawn per group, for the synthetic stream.

Used by :class:`rt_training.stream.synthetic.EventGenerator` when a spec has text fields or a sampling mixture.
Nothing here knows a field name: the groups are the values of ``sampling.mixture.by`` (one group without a
mixture) and every text field gets its own seeded vocabularies.

Group trends (:class:`GroupTrend`). With ``G`` groups in value order and ``t`` the seconds of event time since
the stream's first event, group ``g`` has the log-weight::

    a_g(t) = -log(g + 1)                                     # Zipf-like base popularity
             + TREND_AMPLITUDE * sin(2 pi t / P_g + phi_g)   # a smooth seeded wave
             + BURST_HEIGHT * sum_k [g == g_k] * exp(-(t - c_k)^2 / (2 w^2))   # bursts

with ``P_g`` uniform in ``PERIOD_RANGE`` times the mixture's ``trend_window`` and ``phi_g`` uniform in
``[0, 2 pi)``. Event time is cut into slots of one ``reference_window``; slot ``k`` holds one burst, of the group
``g_k`` and centred at ``c_k`` inside the slot (both from a seeded hash of ``k``), of width ``w = trend_window / 2``.
An event's group is drawn from ``softmax(a(t))`` (:meth:`GroupTrend.shares`), so a group rises to several
times its base share during a burst and a wave peak, over minutes at the demo's windows.

Headlines (:class:`HeadlineText`). Each group owns ``ENTITIES`` capitalized names and ``TOPIC_WORDS`` lowercase
topic words (seeded pseudo-words, distinct across groups and fields); all groups share :data:`FUNCTION_WORDS` and
:data:`VERBS`. A headline has ``k`` words, ``k`` uniform in ``[MIN_WORDS, MAX_WORDS]``, fewer when the field's
``max_length`` (characters) would be exceeded (trailing words are dropped). Word 1 is one of the group's names
(Zipf, exponent 1), word 2 a verb (Zipf), and each later word a function word with probability
``FUNCTION_SHARE`` (never twice in a row, never last) and otherwise one of the group's topic words (Zipf).

After the drift point, in the drifting groups (a seeded ``ceil(G / 2)`` of them, reported by
:attr:`HeadlineText.drifting_groups`), a name or topic-word slot takes one of the group's ``NEW_ENTITIES`` new
names or ``NEW_TOPIC_WORDS`` new topic words with probability ``new_share`` (the generator uses
``min(1, s / 2) / 2`` for drift strength ``s``). These words never appear before the drift point.
"""

from __future__ import annotations

import math

import numpy as np

FUNCTION_WORDS = ("the", "of", "in", "for", "on", "to", "as", "with", "after", "over", "at", "amid")
VERBS = ("says", "plans", "wins", "faces", "backs", "warns", "cuts", "launches", "signs", "rejects", "eyes")
ENTITIES = 6
TOPIC_WORDS = 60
NEW_ENTITIES = 2
NEW_TOPIC_WORDS = 4
MIN_WORDS = 4
MAX_WORDS = 12
FUNCTION_SHARE = 0.3
TREND_AMPLITUDE = 1.0
BURST_HEIGHT = 1.5
PERIOD_RANGE = (2.0, 8.0)

_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def pseudo_words(rng: np.random.Generator, count: int, taken: set[str] | None = None) -> list[str]:
    """``count`` distinct lowercase pseudo-words of 2 or 3 consonant-vowel syllables (sometimes a final
    consonant), none in ``taken`` (which is updated), none a function word or verb."""
    taken = taken if taken is not None else set()
    out: list[str] = []
    while len(out) < count:
        syllables = int(rng.integers(2, 4))
        word = "".join(
            _CONSONANTS[int(rng.integers(len(_CONSONANTS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))]
            for _ in range(syllables)
        )
        if rng.random() < 0.4:
            word += _CONSONANTS[int(rng.integers(len(_CONSONANTS)))]
        if word in taken or word in FUNCTION_WORDS or word in VERBS:
            continue
        taken.add(word)
        out.append(word)
    return out


def _mix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit finalizer (xor-shift-multiply rounds): well-spread hashes of consecutive integers."""
    z = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK64
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK64
    return z ^ (z >> np.uint64(31))


def _zipf_cdf(size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1)
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0
    return cdf


def _zipf_pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


class GroupTrend:
    """Seeded popularity curves of ``n_groups`` groups over event time (see the module docstring).

    Parameters
    ----------
    rng
        Draws the periods, phases and the burst hash key.
    n_groups
        ``G``.
    trend_window_s, reference_window_s
        The mixture's windows: they set the wave periods, the burst width and the burst spacing.
    """

    def __init__(
        self, rng: np.random.Generator, n_groups: int, trend_window_s: float, reference_window_s: float
    ):
        self.n_groups = n_groups
        self.base = -np.log(np.arange(1, n_groups + 1, dtype=np.float64))
        self.period_s = trend_window_s * rng.uniform(*PERIOD_RANGE, size=n_groups)
        self.phase = rng.uniform(0.0, 2 * math.pi, size=n_groups)
        self.slot_s = float(reference_window_s)
        self.width_s = trend_window_s / 2
        self.key = np.uint64(int(rng.integers(0, 2**63)))

    def bursts(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The burst of each slot: its group and its centre (seconds since the first event)."""
        h = _mix64(slots.astype(np.int64).view(np.uint64) ^ self.key)
        group = (h % np.uint64(self.n_groups)).astype(np.intp)
        within = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return group, (slots + within) * self.slot_s

    def log_weights(self, elapsed_s: np.ndarray) -> np.ndarray:
        """``a_g(t)`` for each event (rows) and group (columns)."""
        t = np.asarray(elapsed_s, dtype=np.float64)
        a = self.base + TREND_AMPLITUDE * np.sin(2 * math.pi * t[:, None] / self.period_s + self.phase)
        slot = np.floor(t / self.slot_s).astype(np.int64)
        rows = np.arange(len(t))
        for step in (-1, 0, 1):
            group, centre = self.bursts(slot + step)
            a[rows, group] += BURST_HEIGHT * np.exp(-0.5 * ((t - centre) / self.width_s) ** 2)
        return a

    def shares(self, elapsed_s: np.ndarray) -> np.ndarray:
        """Each group's share of the stream at each time: ``softmax(a(t))`` per row."""
        a = self.log_weights(elapsed_s)
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def assign(self, elapsed_s: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Group indices by inverse CDF of each event's shares at its uniform variate ``u``."""
        if self.n_groups == 1:
            return np.zeros(len(u), dtype=np.intp)
        cdf = np.cumsum(self.shares(elapsed_s), axis=1)
        return np.minimum((cdf < u[:, None]).sum(axis=1), self.n_groups - 1)


class HeadlineText:
    """Headline-like texts for ``n_groups`` groups (see the module docstring).

    Parameters
    ----------
    rng
        Draws the vocabularies.
    n_groups
        Number of groups; texts are drawn for a group index per event.
    drifting
        Per group, whether it takes new words after the drift point.
    max_chars
        The field's ``max_length`` (characters), or ``None``.
    taken
        Words already used by other fields (updated), so every field has its own words.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        n_groups: int,
        drifting: np.ndarray,
        max_chars: int | None,
        taken: set[str],
    ):
        per_group = ENTITIES + TOPIC_WORDS + NEW_ENTITIES + NEW_TOPIC_WORDS
        fresh = pseudo_words(rng, n_groups * per_group, taken)
        table = list(FUNCTION_WORDS) + list(VERBS)
        self._group_start = len(table)
        for g in range(n_groups):
            words = fresh[g * per_group : (g + 1) * per_group]
            names = [w.capitalize() for w in words[:ENTITIES]]
            topic = words[ENTITIES : ENTITIES + TOPIC_WORDS]
            new_names = [
                w.capitalize() for w in words[ENTITIES + TOPIC_WORDS : ENTITIES + TOPIC_WORDS + NEW_ENTITIES]
            ]
            new_topic = words[ENTITIES + TOPIC_WORDS + NEW_ENTITIES :]
            table += names + topic + new_names + new_topic
        self.words = np.array(table, dtype=object)
        self._per_group = per_group
        self.drifting_groups = np.asarray(drifting, dtype=bool)
        self.max_chars = max_chars
        self._cdf = {size: _zipf_cdf(size) for size in (ENTITIES, TOPIC_WORDS, NEW_ENTITIES, NEW_TOPIC_WORDS)}
        self._verbs = _zipf_cdf(len(VERBS))

    def new_words(self, group: int) -> list[str]:
        """The words group ``group`` takes only after the drift point (empty for a group that does not drift)."""
        if not self.drifting_groups[group]:
            return []
        start = self._group_start + group * self._per_group + ENTITIES + TOPIC_WORDS
        return self.words[start : start + NEW_ENTITIES + NEW_TOPIC_WORDS].tolist()

    def _block(self, group: np.ndarray, offset: int, size: int, u: np.ndarray) -> np.ndarray:
        return self._group_start + group * self._per_group + offset + _zipf_pick(self._cdf[size], u)

    def _content(
        self, group: np.ndarray, u: np.ndarray, new: np.ndarray, new_share: float, entity: bool
    ) -> np.ndarray:
        """Word ids of a name (``entity``) or topic-word slot: new words with probability ``new_share`` where
        ``new``, the group's usual words otherwise; ``u`` is split between the two choices."""
        old_off, old_size = (0, ENTITIES) if entity else (ENTITIES, TOPIC_WORDS)
        new_off = ENTITIES + TOPIC_WORDS + (0 if entity else NEW_ENTITIES)
        new_size = NEW_ENTITIES if entity else NEW_TOPIC_WORDS
        use_new = new & (u < new_share)
        share = np.where(new, new_share, 0.0)
        rest = np.clip((u - share) / np.maximum(1.0 - share, 1e-12), 0.0, np.nextafter(1.0, 0.0))
        fresh = np.clip(u / max(new_share, 1e-12), 0.0, np.nextafter(1.0, 0.0))
        return np.where(
            use_new, self._block(group, new_off, new_size, fresh), self._block(group, old_off, old_size, rest)
        )

    def draw(
        self, group: np.ndarray, drifted: np.ndarray, u_len: np.ndarray, u_words: np.ndarray, new_share: float
    ) -> np.ndarray:
        """One headline per event (``object`` array of ``str``).

        ``u_len`` and the ``MAX_WORDS`` columns of ``u_words`` are the event's uniform variates: its length and
        one per word slot.
        """
        n = len(group)
        k = MIN_WORDS + np.minimum(
            (u_len * (MAX_WORDS - MIN_WORDS + 1)).astype(np.intp), MAX_WORDS - MIN_WORDS
        )
        new = drifted & self.drifting_groups[group] & (new_share > 0)
        ids = np.zeros((n, MAX_WORDS), dtype=np.intp)
        ids[:, 0] = self._content(group, u_words[:, 0], new, new_share, entity=True)
        ids[:, 1] = len(FUNCTION_WORDS) + _zipf_pick(self._verbs, u_words[:, 1])
        after_function = np.zeros(n, dtype=bool)
        for j in range(2, MAX_WORDS):
            u = u_words[:, j]
            function = (u < FUNCTION_SHARE) & ~after_function & (j < k - 1)
            which = np.minimum(
                (u / FUNCTION_SHARE * len(FUNCTION_WORDS)).astype(np.intp), len(FUNCTION_WORDS) - 1
            )
            v = np.where(
                u < FUNCTION_SHARE, u / FUNCTION_SHARE, (u - FUNCTION_SHARE) / (1.0 - FUNCTION_SHARE)
            )
            ids[:, j] = np.where(function, which, self._content(group, v, new, new_share, entity=False))
            after_function = function
        words = self.words
        texts = [" ".join(words[row[:length]].tolist()) for row, length in zip(ids, k.tolist(), strict=True)]
        if self.max_chars is not None:
            texts = [_fit(text, self.max_chars) for text in texts]
        return np.array(texts, dtype=object)


def _fit(text: str, max_chars: int) -> str:
    """Drop trailing words until the text fits; a single word too long is cut."""
    while len(text) > max_chars and " " in text:
        text = text.rsplit(" ", 1)[0]
    return text[:max_chars]
