"""Resolve a spec's factory import path (``package.module:function``, ``model.factory`` or
``tokenizer.factory``) to the callable it names.

Importing the module runs its code: a spec with a factory is trusted configuration. Nothing here runs at
spec load time; ``rt-training spec validate`` and training resolve the factory, the Dagster code location
does not (its load stays light).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class FactoryResolutionError(ValueError):
    """A factory path that cannot be used: module missing or failing, attribute missing, not callable."""


def resolve_factory(
    path: str,
    *,
    setting: str = "model.factory",
    expected: str = "a function called as factory(spec, feature_info) that returns an nn.Module",
) -> Callable[..., Any]:
    """Import the module of ``path`` and return the callable it names.

    Parameters
    ----------
    path
        ``"package.module:function"``, as in a spec's ``model.factory``.
    setting
        The spec setting that holds ``path``; every message starts with it.
    expected
        What the callable must be, for the message when it is not callable.

    Returns
    -------
    Callable
        The factory (not called).

    Raises
    ------
    FactoryResolutionError
        When the module cannot be found or raises on import, has no such attribute, or the attribute is not
        callable. The message names the path and what to do.
    """
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise FactoryResolutionError(
                f"{setting} {path!r}: cannot import module {module_name!r} (no module named {missing!r}); "
                "install the package that provides it, add its directory to PYTHONPATH, "
                "or fix the path in the spec"
            ) from None
        raise FactoryResolutionError(
            f"{setting} {path!r}: cannot import module {module_name!r}: it imports {missing!r}, "
            f"which is not installed; install {missing!r} where the pipeline runs"
        ) from None
    except Exception as exc:
        raise FactoryResolutionError(
            f"{setting} {path!r}: cannot import module {module_name!r}: importing it raised "
            f"{type(exc).__name__}: {exc}; fix the module"
        ) from exc
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise FactoryResolutionError(
            f"{setting} {path!r}: module {module_name!r} has no attribute {attr!r} "
            f"(module file {getattr(module, '__file__', None)}); fix the function name in the spec"
        ) from None
    if not callable(factory):
        raise FactoryResolutionError(
            f"{setting} {path!r}: {module_name}.{attr} is a {type(factory).__name__}, not callable; "
            f"point the spec at {expected}"
        )
    return factory
