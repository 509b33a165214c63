"""Load a pipeline spec from YAML and turn validation failures into errors that name the field."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rt_training.spec.factory import FactoryResolutionError, resolve_factory
from rt_training.spec.models import PipelineSpec

SPEC_ENV_VAR = "RT_TRAINING_SPEC"


class SpecError(ValueError):
    """A spec that cannot be used. ``errors`` holds ``(field_path, message)`` pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  - {path}: {msg}" for path, msg in errors)
        super().__init__(f"invalid pipeline spec {source}:\n{lines}")


def _path_of(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def parse_spec(data: Any, source: str = "<dict>", *, check_factory: bool = False) -> PipelineSpec:
    """Validate an already-parsed mapping as a :class:`PipelineSpec`.

    With ``check_factory``, a ``model.factory`` is also imported and checked to be callable (its module's code
    runs); off by default so loading a spec, as the Dagster code location does, imports nothing of the user's.
    """
    if not isinstance(data, dict):
        raise SpecError(
            source, [("<root>", f"expected a mapping at the top level, got {type(data).__name__}")]
        )
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see rt_training/specs/clickstream.yaml)"
            errors.append((_path_of(err["loc"]), msg))
        raise SpecError(source, errors) from None
    if check_factory and spec.model.factory is not None:
        try:
            resolve_factory(spec.model.factory)
        except FactoryResolutionError as exc:
            raise SpecError(source, [("model.factory", str(exc).removeprefix("model.factory "))]) from None
    return spec


BUNDLED_SPECS_PACKAGE = "rt_training.specs"


def bundled_specs() -> list[str]:
    """Names of the specs shipped in ``rt_training/specs`` (``clickstream``, ``news``, ...)."""
    files = resources.files(BUNDLED_SPECS_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def resolve_spec_path(path_or_name: str | os.PathLike[str]) -> Path:
    """The spec file an argument names: an existing file, else a bundled spec's name.

    ``news`` resolves to ``rt_training/specs/news.yaml`` unless a file called ``news`` exists in the working
    directory (a path always wins). Anything else is a :class:`SpecError` listing the bundled names.
    """
    p = Path(path_or_name)
    if p.is_file():
        return p
    names = bundled_specs()
    if str(path_or_name) in names:
        return Path(str(resources.files(BUNDLED_SPECS_PACKAGE).joinpath(f"{path_or_name}.yaml")))
    raise SpecError(
        str(p),
        [
            (
                "<file>",
                f"no such file, and not a bundled spec name (bundled: {', '.join(names)}); pass an existing "
                f"path or one of those names, or set {SPEC_ENV_VAR}",
            )
        ],
    )


def load_spec(path: str | os.PathLike[str] | None = None, *, check_factory: bool = False) -> PipelineSpec:
    """Load a spec file or bundled spec (see :func:`resolve_spec_path`); with none given,
    ``$RT_TRAINING_SPEC`` (a path or bundled name too) or the bundled demo spec.

    ``check_factory`` imports and checks ``model.factory`` (see :func:`parse_spec`).
    """
    if path is None:
        path = os.environ.get(SPEC_ENV_VAR) or None
    if path is None:
        text = resources.files(BUNDLED_SPECS_PACKAGE).joinpath("clickstream.yaml").read_text()
        source = "rt_training/specs/clickstream.yaml"
    else:
        p = resolve_spec_path(path)
        text = p.read_text()
        source = str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(source, [("<yaml>", str(exc).replace("\n", " "))]) from None
    return parse_spec(data, source, check_factory=check_factory)
