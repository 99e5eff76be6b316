"""Typed, frozen run configurations loaded from YAML; unknown keys are errors.

Configs hold plain values; code builds objects from them (``make_benchmark``, ``make_weighting``,
``make_balancer``). A method is given either by name (``weighting: igbv1``) or as a mapping with a
``name`` and its constructor arguments (``balancer: {name: db_mtl, beta: 0.9}``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import torch
import yaml

from mtl_backends.registry import ConfigError

C = TypeVar("C")

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step")
JACOBIAN_METHODS: tuple[str, ...] = ("batched", "sequential")
MIXED_PRECISIONS: tuple[str, ...] = ("none", "bf16")
"""``train.mixed_precision``: float32 throughout, or the training forward in bfloat16 autocast."""
DEFAULT_DIVERGENCE_FACTOR = 1000.0
"""A loss this many times its first-step value (both above ``L*``) ends a run as diverged."""
KEY_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "divergence_factor": DEFAULT_DIVERGENCE_FACTOR,
    "num_workers": 0,
    "mixed_precision": "none",
}
"""``TrainConfig`` fields added after result keys existed, and the default that keeps them out.

At its default such a field changes no valid run (a run ``divergence_factor`` stops was
diverging; ``num_workers`` never changes a run), so cached STL references and comparison cells
keep their keys; ``key_dict`` leaves it out of the hashed form.
"""


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
        device: ``cpu`` (default), ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (CUDA when
            available, else CPU); must be available on this machine. The model, the batches,
            the loss bounds and the update run there; the gap tracker and the methods' small
            solvers and parameters stay on the host (``docs/architecture.md``, "Devices").
        jacobian: ``batched`` or ``sequential`` per-task gradients.
        flat_rho: Radius ``ρ`` of the sharpness-aware flat wrapper (Phan et al.) around the
            balancer (F-MGDA, F-CAGrad, ...; paper default 2.0); ``None``: off. ``0`` equals the
            plain balancer.
        divergence_factor: A run diverges when a task's loss, measured from its lower bound
            ``L*``, exceeds this multiple of its first-step value (default 1000; ``None``: only
            NaN / infinite losses count). The first step, not the base window, is the
            reference because an exploding run is already off by orders of magnitude in its
            base window (Adam at lr 1e3 on ``synthetic``: base losses ~1e21, first loss ~1).
        num_workers: DataLoader worker processes of a streamed benchmark (0: read in the main
            process; in-memory benchmarks ignore it). The batch order never depends on it.
        mixed_precision: ``none`` (float32 throughout) or ``bf16``: the training forward pass
            (model and per-task losses) runs under ``torch.autocast`` with bfloat16 on ``cpu``
            or ``cuda``; the losses, the parameters, the optimizer, the weightings' and the
            balancers' arithmetic and every evaluation stay float32. bfloat16 keeps float32's
            exponent range, so no loss scaling is needed (float16 would need a ``GradScaler``,
            whose scaled per-task gradients the balancers would see: not offered). Not with
            ``flat_rho`` (its perturbed forward passes run inside the update).
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
    divergence_factor: float | None = DEFAULT_DIVERGENCE_FACTOR
    num_workers: int = 0
    mixed_precision: str = "none"

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"train.num_workers must be >= 0, got {self.num_workers}")
        for name in ("steps", "batch_size", "eval_batch_size", "lr_step_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"unknown lr_schedule {self.lr_schedule!r}; "
                f"valid choices: {', '.join(LR_SCHEDULES)}"
            )
        if self.jacobian not in JACOBIAN_METHODS:
            raise ConfigError(
                f"unknown train.jacobian {self.jacobian!r}; "
                f"valid choices: {', '.join(JACOBIAN_METHODS)}"
            )
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError(
                f"unknown train.mixed_precision {self.mixed_precision!r}; "
                f"valid choices: {', '.join(MIXED_PRECISIONS)}"
            )
        if self.mixed_precision != "none" and self.flat_rho is not None:
            raise ConfigError(
                "train.mixed_precision bf16 does not combine with train.flat_rho (the flat "
                "update's perturbed forward passes would run in float32); drop one of them"
            )
        # NaN passes every ordered comparison, so each bound is checked as "finite and in range".
        _check_number("train.lr", self.lr, low=0.0, low_open=True)
        _check_number("train.eps", self.eps, low=0.0)
        _check_number("train.weight_decay", self.weight_decay, low=0.0)
        _check_number("train.momentum", self.momentum, low=0.0)
        _check_number("train.lr_gamma", self.lr_gamma, low=0.0, low_open=True)
        if self.grad_clip is not None:
            _check_number("train.grad_clip", self.grad_clip, low=0.0, low_open=True, null=True)
        if self.flat_rho is not None:
            _check_number("train.flat_rho", self.flat_rho, low=0.0, null=True)
        if self.divergence_factor is not None:
            _check_number(
                "train.divergence_factor", self.divergence_factor, low=1.0, low_open=True, null=True
            )
        if self.base_window is not None:
            start, end = self.base_window
            if not 0 <= start < end:
                raise ConfigError(
                    f"train.base_window {list(self.base_window)} must be [start, end) with "
                    "0 <= start < end"
                )
            if end >= self.steps:
                # The base losses exist from step `end` on; a window that reaches the budget
                # would leave IGBv1 (and every gap-based method) at unit weights all run long.
                raise ConfigError(
                    f"train.base_window {list(self.base_window)} leaves no steps after the base "
                    f"window: it must end before train.steps ({self.steps}); shorten the window "
                    "or raise train.steps"
                )
        check_device(self.device, "train.device")


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

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")


def check_seed(seed: int, setting: str) -> None:
    """Refuse a seed ``numpy.random.SeedSequence`` cannot take (negative).

    Raises:
        ConfigError: ``seed`` is negative (the message names ``setting``).
    """
    if seed < 0:
        raise ConfigError(f"{setting} must be >= 0 (a SeedSequence seed), got {seed}")


def _check_number(
    name: str,
    value: float,
    low: float,
    low_open: bool = False,
    null: bool = False,
) -> None:
    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    if not ok:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ConfigError(
            f"{name} must be a finite number {bound}{' or null' if null else ''}, got {value}"
        )


DEVICE_CHOICES = "cpu, cuda, cuda:N, mps, auto (cuda when available, else cpu)"
"""The values of ``train.device``, as error messages list them."""


def resolve_device(device: str) -> torch.device:
    """The torch device a ``train.device`` value names (``auto``: CUDA when available, else CPU).

    The one place a device setting becomes a ``torch.device``: the trainer, the stacked trainer and
    the streamed loaders all resolve through it, so ``auto`` means the same everywhere.

    Raises:
        ConfigError: Not a device string (the message lists the valid choices).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(
            f"train.device {device!r} is not a torch device ({err}); "
            f"valid choices: {DEVICE_CHOICES}"
        ) from None


def check_device(device: str, setting: str) -> None:
    """Refuse a torch device this machine does not have, before anything is built.

    Raises:
        ConfigError: An unknown device string, or a CUDA / MPS device that is not available (both
            messages name ``setting`` and list the valid choices).
    """
    try:
        dev = resolve_device(device)
    except ConfigError as err:
        raise ConfigError(str(err).replace("train.device", setting, 1)) from None
    available = True
    detail = ""
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        available = count > 0 and (dev.index is None or dev.index < count)
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        detail = f"this torch ({torch.__version__}, {build}) sees {count} CUDA device(s)"
    elif dev.type == "mps":
        available = bool(torch.backends.mps.is_available())
        detail = "MPS is not available in this torch build or on this machine"
    elif dev.type != "cpu":
        available = False
        detail = "igb-rl runs on cpu, cuda or mps"
    if not available:
        raise ConfigError(
            f"{setting} {device!r} is not available: {detail}; valid choices: {DEVICE_CHOICES}; "
            f"use {setting}: cpu (or auto)"
        )


def key_dict(train: TrainConfig) -> dict[str, Any]:
    """The plain form of ``train`` that result keys hash (STL references, comparison cells).

    Fields of ``KEY_NEUTRAL_DEFAULTS`` are left out at their defaults, so adding such a field kept
    every existing key.
    """
    out: dict[str, Any] = to_dict(train)
    for name, default in KEY_NEUTRAL_DEFAULTS.items():
        if out.get(name) == default:
            del out[name]
    return out


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
    """Read a YAML file (plain values only: ``yaml.safe_load``), with errors naming the file.

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: The file is empty, not UTF-8 text, or not valid YAML (a syntax error, or a
            tag such as ``!!python/object`` that plain-value YAML refuses); the message gives the
            line and column.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ConfigError(f"config {str(path)!r} is a folder; give a YAML file")
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"config {str(path)!r} is not UTF-8 text ({err.reason})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config {str(path)!r} is not valid YAML{where}: {problem} (configs hold plain "
            "values only: mappings, lists, numbers, strings)"
        ) from None
    if data is None:
        # An empty file would silently run every default (a 1000-step synthetic run).
        raise ConfigError(
            f"config {str(path)!r} is empty; write the settings (or {{}} for every default)"
        )
    return data


def load_config(cls: type[C], path: str | Path) -> C:
    """Load a YAML file into the config dataclass ``cls``.

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: Invalid YAML, unknown keys or invalid values (the message names the file).
    """
    data = load_yaml(path)
    try:
        return from_dict(cls, data, where=str(path))
    except ConfigError as err:
        # Range checks in __post_init__ name the setting but cannot know the file.
        if str(err).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {err}") from None
