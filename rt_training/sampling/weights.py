"""Per-example sampling weights from a sampling policy: recency, class balance and importance.

Each factor has a natural scale of 1 and the factors multiply (:func:`compose_weights`). The product is not
renormalized per batch: a weighted reservoir compares keys across batches, and rescaling every batch to the
same total would quietly give a small batch's items more weight than a large batch's. When a probability
vector over one batch is wanted (to draw from the batch directly), :func:`normalize` gives it.

* Recency: ``2^(-age / half_life)`` with the age measured in event time from a reference time
  (:func:`recency_weights`). :class:`PolicyWeights` takes the reference from its caller: the event-time bound
  of the rows offered together (the training set's cut, ``watermark - holdout``), so an in-order batch gets real
  recency weights (a row one half-life before the cut weighs half a row at the cut) however the rows are
  ordered. Not the newest event time *in the batch*: rows offered once a minute span a minute, and against
  their own newest row every one weighs about 1. Not the watermark itself either: every offered row is at
  least a holdout older than it, and that common factor would push each new row below the members it competes
  with. Inside a weighted reservoir the keys are fixed when an item is offered, so the factor ranks rows
  offered together (and late rows against the cut), not a member against rows offered a month later: a sample
  that forgets old members as time passes is :class:`rt_training.sampling.time_biased.TimeBiasedReservoir`,
  which applies the half-life inside its keys.
* Class balance: each class is weighted by ``target_share / observed_share`` (:class:`ClassBalancer`). The
  observed shares are over everything the balancer has seen so far, including the batch being weighted,
  optionally decayed with the sample's half-life: that is the population the reservoir draws from, so the
  expected label mix of the sample is the target mix as long as the sample wants far fewer rows of each
  class than that population holds; a rare class with too few rows is taken (almost) whole and the mix
  falls short of the target.
* Importance: proportional to the current champion's per-example loss, mixed with uniform
  (:func:`importance_weights`). Katharopoulos and Fleuret show that sampling by (an upper bound of) the
  per-example gradient norm reduces the variance of SGD and that the loss is a cheap proxy; the uniform share
  keeps every example's probability at least ``uniform_mix`` times the average, which bounds the variance
  and the inverse-probability weights a trainer may apply.

References
----------
Angelos Katharopoulos, François Fleuret. "Not all samples are created equal: deep learning with importance
sampling". ICML 2018.
Charu C. Aggarwal. "On biased reservoir sampling in the presence of stream evolution". VLDB 2006.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rt_training.spec.models import SamplingPolicy


def _finite_nonnegative(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what} must be finite and >= 0; position {i} holds {values[i]!r} ({int(bad.sum())} bad values)"
        )
    return values


def recency_weights(times: Any, reference_time: float, half_life_s: float) -> np.ndarray:
    """``2^(-age / half_life_s)`` with ``age = reference_time - time``, ages below 0 counted as 0.

    Parameters
    ----------
    times
        Event times in seconds.
    reference_time
        The "now" ages are measured from, in seconds.
    half_life_s
        Age at which the weight is 1/2.

    Examples
    --------
    >>> recency_weights([100.0, 40.0, -20.0, 130.0], reference_time=100.0, half_life_s=60.0)
    array([1.  , 0.5 , 0.25, 1.  ])
    """
    if not (math.isfinite(half_life_s) and half_life_s > 0):
        raise ValueError(f"half_life_s must be a positive number of seconds, got {half_life_s!r}")
    times = np.asarray(times, dtype=np.float64)
    if not np.isfinite(times).all():
        i = int(np.flatnonzero(~np.isfinite(times))[0])
        raise ValueError(f"times must be finite seconds; position {i} holds {times[i]!r}")
    age = np.maximum(reference_time - times, 0.0)
    return np.exp2(-age / half_life_s)


def importance_weights(losses: Any, uniform_mix: float = 0.2) -> np.ndarray:
    """Weights proportional to per-example loss, mixed with uniform: ``(1 - a) * loss / mean(loss) + a``.

    The mean weight is 1 and no weight is below ``a = uniform_mix``. All-zero losses give all-one weights.

    Raises
    ------
    ValueError
        When a loss is NaN, infinite or negative (a broken champion should stop the pipeline, not bias it),
        or ``uniform_mix`` is outside (0, 1].

    Examples
    --------
    >>> importance_weights([0.0, 1.0, 2.0], uniform_mix=0.25)
    array([0.25, 1.  , 1.75])
    """
    if not 0 < uniform_mix <= 1:
        raise ValueError(f"uniform_mix must be in (0, 1], got {uniform_mix!r}")
    losses = _finite_nonnegative(losses, "losses")
    mean = losses.mean() if losses.size else 0.0
    if mean == 0:
        return np.ones_like(losses)
    return (1.0 - uniform_mix) * losses / mean + uniform_mix


def _integral(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise ValueError("class labels given as floats must be whole numbers (0.0, 1.0, ...)")
        return labels.astype(np.int64)
    return labels


def class_keys(labels: Any) -> np.ndarray:
    """Labels as the strings a policy's ``class_balance`` uses: ``0``/``1`` for ints, ``True`` for bools.

    Integral floats count as ints (``1.0`` is class ``"1"``), matching a spec's ``{0: 0.5, 1: 0.5}``.

    Examples
    --------
    >>> class_keys([1, 0, 1]).tolist(), class_keys([1.0, 0.0]).tolist(), class_keys(["a"]).tolist()
    (['1', '0', '1'], ['1', '0'], ['a'])
    """
    classes, inverse = _classes(labels)
    return np.array(classes, dtype=object)[inverse]


def _classes(labels: Any) -> tuple[list[str], np.ndarray]:
    """The distinct classes of a batch as strings, and each label's index into them (one pass of np.unique)."""
    raw, inverse = np.unique(_integral(np.asarray(labels)), return_inverse=True)
    return [str(v.item() if isinstance(v, np.generic) else v) for v in raw], inverse.ravel()


class ClassBalancer:
    """Weights each class by ``target_share / observed_share``, with the observed shares kept over the stream.

    Parameters
    ----------
    target
        Class label (as a string, see :func:`class_keys`) to target share; shares sum to 1.
    half_life_s
        When given, observed counts decay with this half-life in event time, to match a time-biased sample.

    Examples
    --------
    >>> balancer = ClassBalancer({"0": 0.5, "1": 0.5})
    >>> labels = [0, 0, 0, 1]
    >>> balancer.observe(labels, times=[0.0, 1.0, 2.0, 3.0])
    >>> balancer.weights(labels)
    array([0.66666667, 0.66666667, 0.66666667, 2.        ])
    """

    def __init__(self, target: Mapping[Any, float], half_life_s: float | None = None) -> None:
        shares = {str(k): float(v) for k, v in target.items()}
        if not shares or any(not math.isfinite(v) or v < 0 for v in shares.values()):
            raise ValueError(f"class_balance shares must be finite and >= 0, got {shares}")
        if abs(sum(shares.values()) - 1.0) > 1e-6:
            raise ValueError(f"class_balance shares must sum to 1, got {sum(shares.values())}")
        if half_life_s is not None and not (math.isfinite(half_life_s) and half_life_s > 0):
            raise ValueError(f"half_life_s must be a positive number of seconds, got {half_life_s!r}")
        self.target = shares
        self.half_life_s = half_life_s
        self.counts: dict[str, float] = dict.fromkeys(shares, 0.0)
        self.clock: float | None = None

    def observe(self, labels: Any, times: Any) -> None:
        """Add a batch to the observed class counts (decayed to the newest event time when a half-life is set).

        Raises
        ------
        ValueError
            When a label is not a class of the target mix (naming it and the known classes).
        """
        classes, inverse = _classes(labels)
        times = np.asarray(times, dtype=np.float64)
        if times.shape != inverse.shape:
            raise ValueError(
                f"labels and times must have equal length, got {inverse.shape} and {times.shape}"
            )
        if inverse.size == 0:
            return
        unknown = [c for c in classes if c not in self.target]
        if unknown:
            raise ValueError(
                f"label value(s) {unknown} are not classes of class_balance {sorted(self.target)}; "
                "add them to the spec's sampling.class_balance (a share of 0 excludes a class)"
            )
        if self.half_life_s is None:
            contributions = np.ones(inverse.size)
        else:
            if not np.isfinite(times).all():
                raise ValueError("times must be finite seconds to decay class counts")
            newest = float(times.max())
            if self.clock is not None and newest < self.clock:
                newest = self.clock
            if self.clock is not None:
                factor = 2.0 ** (-(newest - self.clock) / self.half_life_s)
                self.counts = {c: n * factor for c, n in self.counts.items()}
            self.clock = newest
            contributions = recency_weights(times, newest, self.half_life_s)
        sums = np.bincount(inverse, weights=contributions, minlength=len(classes))
        for c, s in zip(classes, sums, strict=True):
            self.counts[c] += float(s)

    def observed_shares(self) -> dict[str, float]:
        total = sum(self.counts.values())
        return {c: (n / total if total > 0 else 0.0) for c, n in self.counts.items()}

    def weights(self, labels: Any) -> np.ndarray:
        """``target_share / observed_share`` for each label; :meth:`observe` the batch first."""
        shares = self.observed_shares()
        classes, inverse = _classes(labels)
        per_class = np.empty(len(classes))
        for i, c in enumerate(classes):
            if c not in self.target:
                raise ValueError(f"label value {c!r} is not a class of class_balance {sorted(self.target)}")
            if shares[c] <= 0:
                raise ValueError(
                    f"class {c!r} has not been observed yet: call observe() with the batch first"
                )
            per_class[i] = self.target[c] / shares[c]
        return per_class[inverse]

    def state(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "half_life_s": self.half_life_s,
            "counts": self.counts,
            "clock": self.clock,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ClassBalancer:
        balancer = cls(state["target"], state["half_life_s"])
        balancer.counts = {str(k): float(v) for k, v in state["counts"].items()}
        balancer.clock = None if state["clock"] is None else float(state["clock"])
        return balancer


def compose_weights(*factors: Any) -> np.ndarray:
    """Multiply weight factors element-wise, refusing NaN, infinite and negative values.

    Examples
    --------
    >>> compose_weights([1.0, 0.5, 2.0], [2.0, 2.0, 0.0])
    array([2., 1., 0.])
    """
    if not factors:
        raise ValueError("compose_weights needs at least one factor")
    arrays = [_finite_nonnegative(f, f"weight factor {i}") for i, f in enumerate(factors)]
    shape = arrays[0].shape
    for i, a in enumerate(arrays[1:], start=1):
        if a.shape != shape:
            raise ValueError(f"weight factor {i} has shape {a.shape}, factor 0 has {shape}")
    out = arrays[0].copy()
    for a in arrays[1:]:
        out *= a
    return _finite_nonnegative(out, "composed weights")


def normalize(weights: Any) -> np.ndarray:
    """Weights scaled to sum to 1 (a probability vector over the batch).

    Examples
    --------
    >>> normalize([1.0, 3.0])
    array([0.25, 0.75])
    """
    weights = _finite_nonnegative(weights, "weights")
    total = weights.sum()
    if not total > 0:
        raise ValueError("weights sum to 0: no example can be drawn")
    return weights / total


class PolicyWeights:
    """The weight of each new example under a spec's :class:`~rt_training.spec.models.SamplingPolicy`.

    What each strategy multiplies together:

    ``uniform``
        Nothing: Algorithm L ignores weights, so a policy asking for class balance or importance with it is
        refused rather than silently ignored (the recency half-life is ignored, as it has a default).
    ``weighted``
        recency relative to the caller's reference time (the training set's cut; default the newest event time
        seen so far) x class balance over everything seen x importance.
    ``time_biased``
        class balance with counts decayed at the recency half-life x importance; the recency itself lives in
        the reservoir's keys.

    Parameters
    ----------
    policy
        The sampling policy.
    uniform_mix
        Share of uniform weight mixed into importance weights.

    Examples
    --------
    >>> from rt_training.spec.models import SamplingPolicy
    >>> pw = PolicyWeights(SamplingPolicy(strategy="weighted", recency_half_life_s=10.0,
    ...                                   class_balance={0: 0.5, 1: 0.5}))
    >>> pw.weights(labels=[0, 0, 0, 1], times=[10.0, 10.0, 0.0, 10.0])
    array([0.66666667, 0.66666667, 0.33333333, 2.        ])
    """

    def __init__(self, policy: SamplingPolicy, uniform_mix: float = 0.2) -> None:
        if policy.strategy == "uniform" and (policy.class_balance is not None or policy.importance):
            raise ValueError(
                "sampling.strategy 'uniform' draws every example with equal chance, so it cannot apply "
                "sampling.class_balance or sampling.importance; use strategy 'weighted' or 'time_biased', "
                "or remove those settings"
            )
        if policy.strategy == "time_biased" and policy.recency_half_life_s is None:
            raise ValueError("sampling.strategy 'time_biased' needs sampling.recency_half_life_s (seconds)")
        self.strategy = policy.strategy
        self.half_life_s = policy.recency_half_life_s
        self.importance = policy.importance
        self.uniform_mix = float(uniform_mix)
        self.balancer: ClassBalancer | None = None
        if policy.class_balance is not None:
            decay = self.half_life_s if self.strategy == "time_biased" else None
            self.balancer = ClassBalancer(policy.class_balance, half_life_s=decay)
        self.clock: float | None = None

    @property
    def needs_labels(self) -> bool:
        return self.balancer is not None

    def weights(
        self,
        labels: Any | None,
        times: Any,
        losses: Any | None = None,
        *,
        reference_time: float | None = None,
    ) -> np.ndarray | None:
        """Weights for one batch (``None`` for the uniform strategy); updates the observed class counts.

        Parameters
        ----------
        labels
            The batch's labels; needed when the policy balances classes.
        times
            Event times in seconds.
        losses
            The champion's per-example loss on the batch; ``None`` while there is no champion yet (the
            importance factor is then 1 for every example).
        reference_time
            Event time (seconds) recency ages are measured from: the bound of the rows offered together, such as
            the training set's cut. ``None``: the newest event time seen so far (this batch included).

        Examples
        --------
        An in-order hour of rows offered at once, against the cut at its end: the ratio is the half-life's.

        >>> from rt_training.spec.models import SamplingPolicy
        >>> pw = PolicyWeights(SamplingPolicy(strategy="weighted", recency_half_life_s=1800.0))
        >>> pw.weights(None, times=[0.0, 1800.0, 3600.0], reference_time=3600.0)
        array([0.25, 0.5 , 1.  ])
        """
        times = np.asarray(times, dtype=np.float64)
        if self.strategy == "uniform":
            return None
        # Everything that can fail runs before the observed class counts and the clock change.
        factors: list[np.ndarray] = [np.ones(times.shape)]
        if self.importance and losses is not None:
            losses = np.asarray(losses, dtype=np.float64)
            if losses.shape != times.shape:
                raise ValueError(f"losses must have one value per example: {losses.shape} for {times.shape}")
            factors.append(importance_weights(losses, self.uniform_mix))
        clock = self.clock
        if self.strategy == "weighted" and self.half_life_s is not None and times.size:
            newest = float(times.max())
            clock = newest if clock is None else max(clock, newest)
            reference = clock if reference_time is None else float(reference_time)
            factors.append(recency_weights(times, reference, self.half_life_s))
        if self.balancer is not None:
            if labels is None:
                raise ValueError("the policy balances classes, so labels are needed")
            self.balancer.observe(labels, times)
            factors.append(self.balancer.weights(labels))
        self.clock = clock
        return compose_weights(*factors)

    def state(self) -> dict[str, Any]:
        return {"clock": self.clock, "balancer": None if self.balancer is None else self.balancer.state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state` (the policy itself comes from the constructor)."""
        self.clock = None if state["clock"] is None else float(state["clock"])
        if self.balancer is not None and state.get("balancer") is not None:
            self.balancer = ClassBalancer.from_state(state["balancer"])
