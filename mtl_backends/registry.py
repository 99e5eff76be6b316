"""Name -> class registries with construction errors that name the valid choices.

Every family of methods (benchmarks, loss weightings, gradient balancers) is a plain dict from a
registry name to a class. ``build`` turns a name and keyword arguments into an instance and, on a
typo, says which names or arguments exist instead of raising a bare ``KeyError``/``TypeError``;
an argument whose value does not fit the constructor's annotation (``n_tasks: "three"``) is
refused with its name and the expected type before the constructor runs.
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

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
    check_argument_types(cls, kind, name, kwargs)
    return cls(**kwargs)


def check_argument_types(cls: type, kind: str, name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse arguments whose values do not fit the annotations of ``cls``'s constructor.

    Only plain-value annotations are judged (numbers, strings, booleans, ``None``, sequences and
    mappings of them, unions, literals); any other annotation accepts every value and leaves the
    decision to the constructor.

    Raises:
        ConfigError: A value of the wrong type (the message names the argument and the type).
    """
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:
        # Unresolvable annotations (names only imported for type checking): nothing to check.
        return
    for key, value in kwargs.items():
        tp = hints.get(key)
        if tp is not None and not _fits(tp, value):
            raise ConfigError(
                f"{kind} {name!r}: argument {key!r} must be {_describe(tp)}, got {value!r}"
            )


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)


def _fits(tp: Any, value: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp`` (unknown annotations fit everything)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(a, value) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in _SEQUENCES or tp in _SEQUENCES:
        if isinstance(value, str | bytes | Mapping):
            return False
        if not isinstance(value, list | tuple):
            # Arrays, tensors and ranges are sequences too; their entries are the constructor's.
            return hasattr(value, "__len__") and hasattr(value, "__iter__")
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(
                _fits(a, v) for a, v in zip(args, value, strict=True)
            )
        return not args or all(_fits(args[0], v) for v in value)
    if origin in (dict, collections.abc.Mapping) or tp in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    return True


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in _SEQUENCES or tp in _SEQUENCES:
        return "a list" + (f" of {_describe(args[0])}" if args and args[0] is not Ellipsis else "")
    if origin in (dict, collections.abc.Mapping) or tp in (dict, collections.abc.Mapping):
        return "a mapping"
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}
    if tp is type(None):
        return "null"
    return names.get(tp, getattr(tp, "__name__", str(tp)))
