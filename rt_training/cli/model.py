"""``rt-training model``: the model registry's history, and moving the champion pointer by hand.

Each move is one atomic registry commit, kept in the history with its reason; the training jobs' gate makes the
same moves (:mod:`rt_training.training.champion`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import click

from rt_training.spec import PipelineSpec, SpecError, load_spec

if TYPE_CHECKING:
    from rt_training.training.registry import ModelRegistry, RegistryEvent

_spec_option = click.option(
    "--spec",
    "spec_path",
    default=None,
    help="Pipeline spec YAML (default: $RT_TRAINING_SPEC or the demo spec).",
)
_lake_option = click.option(
    "--lake", default=None, help="Lake root folder or URI (default: $RT_TRAINING_LAKE or .data/lake)."
)


def _load(spec_path: str | None) -> PipelineSpec:
    try:
        return load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None


def _registry(spec: PipelineSpec, lake: str | None) -> ModelRegistry:
    from rt_training.ingest.batch import LakeLocation
    from rt_training.lake.tables import lake_root
    from rt_training.training.champion import registry_for

    return registry_for(spec, LakeLocation(lake_root(lake)))


def _metric(event: RegistryEvent) -> str:
    """``auc=0.7200 (validation)`` or ``(held-out)``: the training run's validation split, or the gate's window."""
    from rt_training.training.metrics import HOLDOUT, metric_split

    if event.metric_value is None or not math.isfinite(event.metric_value):
        return "-"
    split = metric_split(event.event, event.lineage)
    where = {None: "", HOLDOUT: " (held-out)"}.get(split, f" ({split})")
    return f"{event.metric_name}={event.metric_value:.4f}{where}"


@click.group()
def model() -> None:
    """Show the model registry and move the champion (promote, rollback)."""


@model.command("list")
@_spec_option
@_lake_option
def list_models(spec_path: str | None, lake: str | None) -> None:
    """Every registry event, oldest first; '*' marks the current champion's checkpoint.

    A metric is labelled ``(validation)`` when the training run measured it on its validation split (a
    registration, a hand promotion) and ``(held-out)`` when the gate measured it on the held-out window.
    """
    spec = _load(spec_path)
    registry = _registry(spec, lake)
    history = registry.history()
    if not history:
        click.echo(f"no models registered yet for pipeline {spec.name!r} ({registry.uri})")
        return
    champion = registry.champion()
    current = None if champion is None else champion.checkpoint_id
    click.echo(
        f"{'seq':>4}  {'time (UTC)':19}  {'event':11}  {'':1} {'checkpoint':34}  {'metric':29}  reason"
    )
    for e in history:
        mark = "*" if e.checkpoint_id == current else ""
        when = e.timestamp.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{e.seq:>4}  {when:19}  {e.event:11}  {mark:1} {e.checkpoint_id:34}  {_metric(e):29}  {e.reason}"
        )
    click.echo(f"champion: {current or 'none'}")


@model.command("promote")
@click.argument("checkpoint_id")
@click.option("--reason", default="manual promote", show_default=True, help="Recorded in the registry.")
@_spec_option
@_lake_option
def promote(checkpoint_id: str, reason: str, spec_path: str | None, lake: str | None) -> None:
    """Make a registered checkpoint the champion, after verifying its sha256 and that it fits the spec."""
    from rt_training.training.checkpoints import CheckpointError, check_compatible, load_checkpoint
    from rt_training.training.registry import RegistryError

    spec = _load(spec_path)
    registry = _registry(spec, lake)
    try:
        entry = registry.registered(checkpoint_id)
        check_compatible(load_checkpoint(entry.path, entry.sha256), spec)
        before = registry.champion()
        registry.promote(checkpoint_id, reason)
    except (RegistryError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"champion: {before.checkpoint_id if before else 'none'} -> {checkpoint_id}")


@model.command("rollback")
@click.option("--reason", default="manual rollback", show_default=True, help="Recorded in the registry.")
@_spec_option
@_lake_option
def rollback(reason: str, spec_path: str | None, lake: str | None) -> None:
    """Move the champion back to the one before it (one atomic commit)."""
    from rt_training.training.registry import RegistryError

    spec = _load(spec_path)
    registry = _registry(spec, lake)
    try:
        before = registry.champion()
        after = registry.rollback(reason)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    assert before is not None
    click.echo(f"champion: {before.checkpoint_id} -> {after.checkpoint_id}")
