"""Typed, frozen run configurations loaded from YAML; unknown keys are errors.

Configs hold plain values; code builds objects from them (``make_benchmark``, ``make_weighting``,
``make_balancer``). A method is given either by name (``weighting: igbv1``) or as a mapping with a
``name`` and its constructor arguments (``balancer: {name: db_mtl, beta: 0.9}``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from mtl_backends.registry import ConfigError

C = TypeVar("C")

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step")


@dataclass(frozen=True)
class MethodSpec:
    """A registry name plus constructor arguments.

    Attributes:
        name: Registry name.
        kwargs: Constructor arguments.
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, where: str) -> MethodSpec:
        """From ``"name"`` or ``{"name": ..., **kwargs}``."""
        if isinstance(value, MethodSpec):
            return value
        if isinstance(value, str):
            return cls(value, {})
        if isinstance(value, Mapping):
            if "name" not in value:
                raise ConfigError(
                    f"{where}: a method mapping needs a 'name' key, got {dict(value)}"
                )
            kwargs = {k: v for k, v in value.items() if k != "name"}
            return cls(str(value["name"]), kwargs)
        raise ConfigError(
            f"{where}: expected a method name or a mapping with 'name', got {value!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **kwargs}``."""
        return {"name": self.name, **dict(self.kwargs)}


@dataclass(frozen=True)
class TrainConfig:
    """How one MTL run trains.

    Attributes:
        steps: Optimizer steps in the run (the budget).
        batch_size: Training batch size (the last incomplete batch of an epoch is dropped).
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr: Initial learning rate.
        weight_decay: Weight decay.
        momentum: SGD momentum.
        lr_schedule: ``constant``, ``cosine`` (to 0 at the last step) or ``step``.
        lr_step_size: Steps between decays for ``step``.
        lr_gamma: Decay factor for ``step``.
        grad_clip: Max global gradient norm (``None``: no clipping).
        base_window: ``[start, end)`` steps for the base losses (``None``: the second epoch).
        eps: Added inside the log transform.
        eval_batch_size: Chunk size of evaluation passes.
        device: Torch device, e.g. ``cpu`` or ``cuda``.
        jacobian: ``batched`` or ``sequential`` per-task gradients.
        flat_rho: Radius ``ρ`` of the sharpness-aware flat wrapper (Phan et al.) around the
            balancer (F-MGDA, F-CAGrad, ...; paper default 2.0); ``None``: off. ``0`` equals the
            plain balancer.
    """

    steps: int = 1000
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_schedule: str = "constant"
    lr_step_size: int = 1000
    lr_gamma: float = 0.5
    grad_clip: float | None = None
    base_window: tuple[int, int] | None = None
    eps: float = 1e-8
    eval_batch_size: int = 1024
    device: str = "cpu"
    jacobian: str = "batched"
    flat_rho: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"train.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"unknown lr_schedule {self.lr_schedule!r}; "
                f"valid choices: {', '.join(LR_SCHEDULES)}"
            )
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be positive or null, got {self.grad_clip}")
        if self.flat_rho is not None and not 0.0 <= self.flat_rho < float("inf"):
            raise ConfigError(f"train.flat_rho must be >= 0 or null, got {self.flat_rho}")


@dataclass(frozen=True)
class RunConfig:
    """One plain MTL run (``igb train``).

    Attributes:
        benchmark: Benchmark name and arguments.
        weighting: Loss weighting name and arguments.
        balancer: Gradient balancer name and arguments.
        train: Training settings.
        seed: Seed of model initialisation, batch order and every method's randomness.
        stl_cache: Folder of cached single-task references (``None``: no Δm).
    """

    benchmark: MethodSpec = field(default_factory=lambda: MethodSpec("synthetic"))
    weighting: MethodSpec = field(default_factory=lambda: MethodSpec("ew"))
    balancer: MethodSpec = field(default_factory=lambda: MethodSpec("sum"))
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    stl_cache: str | None = ".igb-cache/stl"


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is MethodSpec:
        return MethodSpec.parse(value, where)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, where)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for member in inner:  # the first member that accepts the value
            try:
                return _convert(member, value, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[C], data: Any, where: str = "config") -> C:
    """Build the dataclass ``cls`` from a mapping; unknown keys are errors naming valid ones."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(names)}"
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> Any:
    """A plain (YAML/JSON-friendly) form of a config dataclass."""
    if isinstance(config, MethodSpec):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, with an error naming the file when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    with path.open() as fh:
        return yaml.safe_load(fh)


def load_config(cls: type[C], path: str | Path) -> C:
    """Load a YAML file into the config dataclass ``cls``."""
    return from_dict(cls, load_yaml(path), where=str(path))
