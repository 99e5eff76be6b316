"""The repository's ``configs/`` and ``policies/`` by name, in a checkout and in an installed wheel.

In a source checkout (and an editable install) they are read where they are: ``configs/`` and
``policies/`` beside the packages. A wheel carries a copy as package data,
``mtl_backends/_data/configs/`` and ``mtl_backends/_data/policies/`` (copied by ``setup.py``'s
build step; the repository layout stays as it is). ``data_dir`` gives whichever exists, the
packaged copy first.

Names: a built-in config is its file name without ``.yaml`` inside its schema's folder
(``resolve_config("smoke", "experiments")``), a packaged policy its folder name
(``synthetic-ppo-residual``). A value that is an existing file, contains a path separator or ends
in ``.yaml`` / ``.yml`` is always a path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from mtl_backends.registry import ConfigError

Kind = Literal["configs", "policies"]
CONFIG_SCHEMAS: tuple[str, ...] = ("runs", "env", "agents", "experiments")
"""The folders of ``configs/``: one per config schema."""
PACKAGED_DATA = Path(__file__).resolve().with_name("_data")
"""Where a wheel keeps its copy of ``configs/`` and ``policies/``."""
CHECKOUT_ROOT = Path(__file__).resolve().parents[1]
"""The repository root when the package runs from a source checkout."""
_SUFFIXES = (".yaml", ".yml")


def data_dir(kind: Kind) -> Path | None:
    """The folder of ``configs`` or ``policies``: the wheel's copy, else the checkout's, else None.

    Raises:
        ValueError: ``kind`` is neither ``configs`` nor ``policies``.
    """
    if kind not in ("configs", "policies"):
        raise ValueError(f"packaged data kind {kind!r}; valid choices: configs, policies")
    packaged = PACKAGED_DATA / kind
    if packaged.is_dir():
        return packaged
    checkout = CHECKOUT_ROOT / kind
    # A checkout has its pyproject.toml beside the packages (site-packages has none).
    if (CHECKOUT_ROOT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return None


def is_name(value: str | Path) -> bool:
    """Whether ``value`` may name packaged data: no path separator and no YAML suffix."""
    text = str(value)
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        bool(text)
        and not any(s in text for s in separators)
        and not text.endswith(_SUFFIXES)
        and text not in (".", "..")
    )


def builtin_configs(schema: str) -> list[str]:
    """Names of the built-in configs of ``schema`` (``runs``, ``env``, ``agents``, ``experiments``).

    Raises:
        ValueError: An unknown schema (the valid ones are listed).
    """
    if schema not in CONFIG_SCHEMAS:
        raise ValueError(f"config schema {schema!r}; valid choices: {', '.join(CONFIG_SCHEMAS)}")
    root = data_dir("configs")
    folder = None if root is None else root / schema
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file())


def resolve_config(value: str | Path, schema: str) -> Path:
    """A config file: ``value`` itself when it is a path, else the built-in config of that name.

    Args:
        value: A path to a YAML file, or the name of a built-in config (``smoke``).
        schema: The folder of ``configs/`` the name is looked up in.

    Returns:
        The path to read (an existing file, or a path the loader reports as missing).

    Raises:
        ConfigError: ``value`` is a name that is neither an existing file nor a built-in config
            of ``schema`` (the built-in names are listed).
    """
    path = Path(value)
    if path.is_file() or not is_name(value):
        return path
    names = builtin_configs(schema)
    if str(value) in names:
        root = data_dir("configs")
        assert root is not None  # names come from it
        return root / schema / f"{value}.yaml"
    listed = ", ".join(names) if names else "(none: this installation carries no configs)"
    raise ConfigError(
        f"{str(value)!r} is neither a config file nor a built-in {schema} config; built-in "
        f"{schema} configs: {listed} (or give the path of a YAML file)"
    )


def builtin_policies() -> dict[str, Path]:
    """Packaged policies (the repository's ``policies/``): name -> folder."""
    root = data_dir("policies")
    if root is None:
        return {}
    return {
        p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "policy.json").is_file()
    }


__all__ = [
    "CHECKOUT_ROOT",
    "CONFIG_SCHEMAS",
    "PACKAGED_DATA",
    "builtin_configs",
    "builtin_policies",
    "data_dir",
    "is_name",
    "resolve_config",
]
