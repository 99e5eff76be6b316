"""Name -> class registries with construction errors that name the valid choices.

Every family of methods (benchmarks, loss weightings, gradient balancers) is a plain dict from a
registry name to a class. ``build`` turns a name and keyword arguments into an instance and, on a
typo, says which names or arguments exist instead of raising a bare ``KeyError``/``TypeError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration names something that does not exist or combines things that conflict."""


def valid_arguments(cls: type) -> list[str]:
    """Names of the keyword arguments ``cls`` accepts (``self`` and ``*args`` excluded)."""
    params = inspect.signature(cls).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def build(registry: Mapping[str, type[T]], kind: str, name: str, kwargs: Mapping[str, Any]) -> T:
    """Instantiate ``registry[name](**kwargs)`` with clear errors.

    Args:
        registry: Name -> class mapping.
        kind: What the registry holds, used in messages (e.g. ``"loss weighting"``).
        name: Registry name.
        kwargs: Constructor arguments.

    Returns:
        The new instance.

    Raises:
        ConfigError: Unknown name, or an argument the class does not accept.
    """
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r}; valid choices: {', '.join(sorted(registry))}")
    cls = registry[name]
    accepted = valid_arguments(cls)
    has_var_kw = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(cls).parameters.values()
    )
    unknown = [k for k in kwargs if k not in accepted]
    if unknown and not has_var_kw:
        raise ConfigError(
            f"{kind} {name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"valid arguments: {', '.join(accepted) or '(none)'}"
        )
    return cls(**kwargs)
