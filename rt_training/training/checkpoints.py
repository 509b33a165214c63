"""Checkpoints: one self-describing dict per file, written atomically, verified by sha256 before loading.

A checkpoint holds the model ``state_dict``, the optimizer state, the model args (the spec's model section and
input sizes), the feature state the model was trained with (statistics, vocabularies, tokenizers; see
:mod:`rt_training.features.state`), step and epoch, metrics and lineage. Everything besides tensors is plain data (dicts, lists,
strings, numbers), so it loads with ``torch.load(weights_only=True)``: loading a checkpoint never runs code
from it.

Files: ``<dir>/<id>.pt``, a sidecar ``<dir>/<id>.json`` with the file's sha256, size, metrics and lineage, and
the feature state as its own versioned artifact ``<dir>/<id>.features.json`` (its sha256 is in the sidecar and
the lineage), readable without torch.
The model registry keeps the sha256 too; it is the authority when the two disagree.

Write: temp file in the same directory → flush + fsync → ``os.replace`` → fsync the directory, so a crash
leaves either the old state or the complete new file, never a torn one.

Errors: :class:`CheckpointCorruptError` (sha256 mismatch or unreadable payload; names the path and both
hashes), :class:`CheckpointMissingError`, :class:`IncompatibleCheckpointError` (the checkpoint's model does
not fit the spec).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from rt_training.features.state import FEATURE_STATE_FORMAT, FeatureState
from rt_training.spec import PipelineSpec
from rt_training.training.models import build_model, compatible, model_args

CHECKPOINT_FORMAT = "rt_training.checkpoint/2"
"""``/2``: the model takes a batch dict and the checkpoint carries its feature state (``/1`` checkpoints do not
load: their features were computed at ingest with spec-typed statistics)."""
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used."""


class CheckpointMissingError(CheckpointError):
    """The checkpoint file (or the sidecar holding its sha256) does not exist."""


class CheckpointCorruptError(CheckpointError):
    """The file's sha256 differs from the recorded one, or the payload cannot be read."""

    def __init__(self, path: str | os.PathLike[str], expected: str, actual: str, detail: str = "") -> None:
        self.path, self.expected, self.actual = str(path), expected, actual
        super().__init__(
            f"checkpoint {self.path} is corrupt: sha256 expected {expected}, file has {actual}"
            + (f" ({detail})" if detail else "")
            + "; do not use it: load the previous champion (ModelRegistry.load_champion falls back) "
            "or retrain"
        )


class IncompatibleCheckpointError(CheckpointError):
    """The checkpoint was trained for a different model or feature set than the spec declares."""


@dataclass(frozen=True)
class Lineage:
    """Where a checkpoint came from: enough to rebuild its training set and explain its metrics.

    ``kafka_offsets`` holds ``{"topic", "partition", "start", "end"}`` ranges (end exclusive) of the silver
    rows the training set could draw from; ``silver_versions`` maps a table name to the Delta version read.
    """

    training_set_uri: str | None = None
    training_set_version: int | None = None
    silver_versions: dict[str, int] = field(default_factory=dict)
    kafka_offsets: list[dict[str, Any]] = field(default_factory=list)
    spec_fingerprint: str | None = None
    code_version: dict[str, str | None] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    parent_checkpoint_id: str | None = None
    drift_report: str | None = None
    created_at: str = ""
    feature_state: dict[str, Any] = field(default_factory=dict)
    """The feature state's sha256 and format, and what fitting it did (:meth:`FeatureState.describe`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lineage:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown lineage fields {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class SavedCheckpoint:
    """A checkpoint on disk: what the model registry records."""

    id: str
    path: str
    sha256: str
    size_bytes: int


def code_version() -> dict[str, str | None]:
    """The package version and, when the code runs from a git checkout, its commit (``None`` otherwise)."""
    try:
        version: str | None = metadata.version("rt-training")
    except metadata.PackageNotFoundError:
        version = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        commit = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {"package": version, "git_commit": commit or None}


def new_checkpoint_id(now: dt.datetime | None = None) -> str:
    """Sortable by creation time, unique across concurrent runs: ``ckpt-20250101T120000Z-1a2b3c4d``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"ckpt-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def build_checkpoint(
    *,
    checkpoint_id: str,
    model: nn.Module,
    optimizer_state: dict[str, Any] | None,
    spec: PipelineSpec,
    state: FeatureState,
    step: int,
    epoch: int,
    metrics: dict[str, float],
    lineage: Lineage,
) -> dict[str, Any]:
    """The checkpoint dict (tensors moved to CPU so it loads on a machine without a GPU)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "id": checkpoint_id,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(optimizer_state) if optimizer_state is not None else None,
        "model_args": model_args(spec, state),
        # JSON text, not the dict: a plain string loads under weights_only and keeps the bytes the sha256 names.
        "feature_state": state.to_json().decode(),
        "step": int(step),
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "lineage": lineage.to_dict(),
    }


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(target: Path, write: Any) -> None:
    """``write(file)`` into a temp file next to ``target``, fsync, rename, fsync the directory."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".json")


def features_path(path: str | os.PathLike[str]) -> Path:
    """The feature-state artifact beside checkpoint ``path``."""
    return Path(path).with_suffix(".features.json")


def save_checkpoint(payload: dict[str, Any], directory: str | os.PathLike[str]) -> SavedCheckpoint:
    """Write ``payload`` atomically as ``<directory>/<id>.pt`` plus its sha256 sidecar and, when it has one, its
    feature state as ``<id>.features.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{payload['id']}.pt"
    if target.exists():
        raise CheckpointError(f"checkpoint {target} already exists; checkpoint ids must be unique")
    _atomic_write(target, lambda f: torch.save(payload, f))
    saved = SavedCheckpoint(payload["id"], str(target), file_sha256(target), target.stat().st_size)
    sidecar: dict[str, Any] = {**asdict(saved)}
    if isinstance(payload.get("feature_state"), str):
        features = payload["feature_state"].encode()
        _atomic_write(features_path(target), lambda f: f.write(features))
        sidecar["feature_state"] = {
            "path": str(features_path(target)),
            "sha256": hashlib.sha256(features).hexdigest(),
            "format": FEATURE_STATE_FORMAT,
        }
    sidecar |= {
        "format": payload.get("format"),
        "step": payload.get("step"),
        "metrics": payload.get("metrics", {}),
        "lineage": payload.get("lineage", {}),
    }
    text = json.dumps(sidecar, indent=2, sort_keys=True).encode()
    _atomic_write(sidecar_path(target), lambda f: f.write(text))
    return saved


def load_checkpoint(
    path: str | os.PathLike[str], expected_sha256: str | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Verify the file's sha256 (from ``expected_sha256`` or the sidecar) and only then ``torch.load`` it.

    Raises :class:`CheckpointMissingError` or :class:`CheckpointCorruptError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"checkpoint file {path} does not exist")
    if expected_sha256 is None:
        side = sidecar_path(path)
        if not side.is_file():
            raise CheckpointMissingError(
                f"no sha256 for checkpoint {path}: sidecar {side} is missing; pass the sha256 the model "
                "registry recorded"
            )
        expected_sha256 = json.loads(side.read_text())["sha256"]
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise CheckpointCorruptError(path, expected_sha256, actual)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointCorruptError(path, expected_sha256, actual, f"unreadable payload: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointCorruptError(path, expected_sha256, actual, f"not a {CHECKPOINT_FORMAT} checkpoint")
    return payload


def feature_state_of(checkpoint: dict[str, Any]) -> FeatureState:
    """The feature state a checkpoint's model was trained with."""
    text = checkpoint.get("feature_state")
    if not isinstance(text, str):
        raise IncompatibleCheckpointError(
            f"checkpoint {checkpoint.get('id')!r} has no feature state (written before features were fitted "
            "from the data); train from scratch (no init checkpoint)"
        )
    return FeatureState.from_dict(json.loads(text))


def check_compatible(
    checkpoint: dict[str, Any], spec: PipelineSpec, state: FeatureState | None = None
) -> None:
    """Raise :class:`IncompatibleCheckpointError` when the checkpoint's model cannot serve ``spec`` with
    ``state`` (its own feature state when ``None``). Grown vocabularies or classes are compatible."""
    state = state if state is not None else feature_state_of(checkpoint)
    problem = compatible(checkpoint.get("model_args", {}), model_args(spec, state))
    if problem is not None:
        raise IncompatibleCheckpointError(
            f"checkpoint {checkpoint.get('id')!r} does not fit spec {spec.name!r} ({problem}); "
            "train from scratch (no init checkpoint) after changing the model or features"
        )


class Restored(NamedTuple):
    """A checkpoint's model (eval mode) and the feature state its inputs must be made with."""

    model: nn.Module
    state: FeatureState


def restore_model(checkpoint: dict[str, Any], spec: PipelineSpec) -> Restored:
    """The checkpoint's model, built from the spec and its own feature state, with its weights."""
    state = feature_state_of(checkpoint)
    check_compatible(checkpoint, spec, state)
    model = build_model(spec, state)
    model.load_state_dict(checkpoint["model"])
    return Restored(model.eval(), state)


def state_digest(model: nn.Module) -> str:
    """sha256 over the parameters and buffers in ``state_dict`` order: equal digests mean equal weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
