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
    click.echo(
        f"spec {loaded.name!r} is valid: topic {loaded.source.topic}, {len(loaded.schema_.fields)} fields, "
        f"{len(loaded.numeric_feature_names)} numeric and {len(loaded.categorical_feature_names)} categorical "
        f"features, label {loaded.label.field} ({loaded.label.kind}), model {model}, "
        f"fingerprint {loaded.fingerprint()[:12]}"
    )
