"""``rt-training spec``: check a pipeline spec before a pipeline uses it."""

from __future__ import annotations

import click

from rt_training.spec import SpecError, load_spec


@click.group()
def spec() -> None:
    """Inspect and validate pipeline specs."""


@spec.command("validate")
@click.argument("path", required=False)
def validate(path: str | None) -> None:
    """Validate PATH (default: $RT_TRAINING_SPEC or the bundled demo spec).

    A ``model.factory`` is imported (its module's code runs) and checked to be callable.
    """
    try:
        loaded = load_spec(path, check_factory=True)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    model = f"factory {loaded.model.factory}" if loaded.model.factory else f"built-in {loaded.model.builtin}"
    groups = ("numeric", "categorical", "text", "sequence", "vector")
    counts = ", ".join(
        f"{len(getattr(loaded.features, g))} {g}" for g in groups if getattr(loaded.features, g)
    )
    click.echo(
        f"spec {loaded.name!r} is valid: topic {loaded.source.topic}, {len(loaded.schema_.fields)} fields, "
        f"features: {counts}, label {loaded.label.field} ({loaded.label.kind}, metric "
        f"{loaded.training.metric}), model {model}, fingerprint {loaded.fingerprint()[:12]}"
    )
