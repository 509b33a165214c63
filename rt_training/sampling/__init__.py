"""Dynamic sampling of the stream into a training set: reservoirs, per-example weights, replay, persistence.

Reservoirs (seeded, batch-vectorized, restartable from a JSON state), one per ``sampling.strategy``:

``uniform``
    :class:`UniformReservoir` (Algorithm L): every row equally likely; no recency, class or importance weights.
``weighted``
    :class:`WeightedReservoir` (A-Res with log-space keys) with recency x class balance x importance weights;
    recency ages count in event time from the training set's cut, so rows offered together are ranked by age
    (and late rows discounted), while members already drawn keep their keys.
``time_biased``
    :class:`TimeBiasedReservoir`: an exponential time-biased reservoir whose members' odds halve with every
    half-life of event time, so old rows leave as the stream moves on.

With ``sampling.mixture`` each strategy's reservoir keeps target shares per group of a field
(:mod:`~rt_training.sampling.mixture` computes the targets, :mod:`~rt_training.sampling.grouped` keeps them).
:mod:`~rt_training.sampling.weights` turns a
sampling policy into per-example weights, :mod:`~rt_training.sampling.replay` reserves a share of the training
set for older rows, :class:`SamplingSession` advances the whole sample one silver version at a time, and
:class:`SamplerStateStore` keeps its state in Delta, once per silver version.
"""

from rt_training.sampling.base import Reservoir, UpdateResult
from rt_training.sampling.factory import make_sampler, restore_sampler
from rt_training.sampling.grouped import GroupedTimeBiasedReservoir, GroupedWeightedReservoir
from rt_training.sampling.mixture import MixturePlan, MixtureReport, plan_mixture
from rt_training.sampling.replay import MixUpdate, ReplayMixer, replay_split
from rt_training.sampling.session import PolicyChangedError, SamplingSession, SessionUpdate
from rt_training.sampling.state_store import SamplerStateStore, SaveResult, StoredState, sampler_state_uri
from rt_training.sampling.time_biased import TimeBiasedReservoir
from rt_training.sampling.uniform import UniformReservoir
from rt_training.sampling.weighted import WeightedReservoir
from rt_training.sampling.weights import (
    ClassBalancer,
    PolicyWeights,
    compose_weights,
    importance_weights,
    normalize,
    recency_weights,
)

__all__ = [
    "ClassBalancer",
    "GroupedTimeBiasedReservoir",
    "GroupedWeightedReservoir",
    "MixUpdate",
    "MixturePlan",
    "MixtureReport",
    "PolicyChangedError",
    "PolicyWeights",
    "ReplayMixer",
    "Reservoir",
    "SamplerStateStore",
    "SamplingSession",
    "SaveResult",
    "SessionUpdate",
    "StoredState",
    "TimeBiasedReservoir",
    "UniformReservoir",
    "UpdateResult",
    "WeightedReservoir",
    "compose_weights",
    "importance_weights",
    "make_sampler",
    "normalize",
    "plan_mixture",
    "recency_weights",
    "replay_split",
    "restore_sampler",
    "sampler_state_uri",
]
