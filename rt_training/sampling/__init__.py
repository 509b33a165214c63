"""Dynamic sampling of the stream into a training set: reservoirs, per-example weights, replay, persistence.

Reservoirs (seeded, batch-vectorized, restartable from a JSON state):
:class:`UniformReservoir` (Algorithm L), :class:`WeightedReservoir` (A-Res with log-space keys) and
:class:`TimeBiasedReservoir` (exponential decay by event age). :mod:`~rt_training.sampling.weights` turns a
sampling policy into per-example weights, :mod:`~rt_training.sampling.replay` reserves a share of the training
set for older rows, :class:`SamplingSession` advances the whole sample one silver version at a time, and
:class:`SamplerStateStore` keeps its state in Delta, once per silver version.
"""

from rt_training.sampling.base import Reservoir, UpdateResult
from rt_training.sampling.factory import make_sampler, restore_sampler
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
    "MixUpdate",
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
    "recency_weights",
    "replay_split",
    "restore_sampler",
    "sampler_state_uri",
]
