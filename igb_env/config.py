"""The environment's typed, frozen configuration (``EnvConfig``) and its named presets.

An ``EnvConfig`` is built from a plain mapping (or a YAML file) through
``mtl_backends.config.from_dict``, so unknown keys are errors that list the valid ones. A mapping
may name a ``preset`` (see ``PRESETS``) whose values its other keys override; nested sections
(``train``) are merged key by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from igb_env.instances import INSTANCE_ORDERS, InstanceSet, overlap
from igb_env.rewards import REWARDS
from mtl_backends.benchmarks import BENCHMARKS
from mtl_backends.config import MethodSpec, TrainConfig, from_dict, load_yaml, to_dict
from mtl_backends.features import FeatureSpec
from mtl_backends.policy.action_maps import ACTION_MAPS
from mtl_backends.policy.format import build_sidecar
from mtl_backends.registry import ConfigError

BUDGET_STREAM = 0x62756467
"""Mixed into the instance seed of the budget draw (``EnvConfig.train_for``)."""


def _default_train() -> TrainConfig:
    return TrainConfig(steps=1000, base_window=(50, 100), batch_size=100, lr=1e-3)


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines the MDP of ``IGBEnv``.

    The defaults are the prototype's training setting (``docs/architecture.md``, "Defaults"):
    1000-step episodes including a 100-step base window, K = 25 steps per action, residual actions
    with τ = 1 and the validation reward scaled by 10.

    Attributes:
        benchmark: Benchmark name and arguments. When the benchmark takes a ``seed`` and the
            arguments do not fix one, the instance seed becomes its data seed.
        balancer: Gradient balancer the weights are applied with (after it).
        train: Training settings of each episode's MTL run; ``train.steps`` is the budget and
            ``train.base_window`` the base-loss window (``None``: the second epoch).
        steps_per_action: ``K``, trainer steps per env step (the action is held for K steps).
        action_mode: ``absolute`` or ``residual`` (``mtl_backends.policy.action_maps``).
        tau: Action temperature ``τ``.
        reward: Reward name and arguments (``igb_env.rewards.REWARDS``).
        reward_scale: Multiplies the reward (the ``α`` of IGBv2's reward).
        history: Number of past log-gap snapshots in the observation.
        ema: EMA coefficient of the smoothed gap in the observation.
        feature_table: The observation's feature table, ``v1`` (fixed T) or ``v2`` (the
            task-count-agnostic table: relative gap, loss and noise features and T among the
            globals; ``mtl_backends.features``).
        budgets: Step budgets drawn per instance (uniformly, seeded by the instance seed alone);
            ``None``: every instance trains ``train.steps`` steps. The base window stays fixed.
        divergence_penalty: Reward of the step in which training diverges (non-finite loss).
        val_batch_size: Rows of the benchmark's ``val`` split in the fixed held-in validation batch
            of validation rewards (the first rows of the split).
        variation: Draw each instance's benchmark arguments with the benchmark's
            ``sample_variation`` (e.g. synthetic task scales, noise floors, label fractions,
            relatedness), seeded by the instance seed; the arguments in ``benchmark`` stay fixed
            (``n_tasks`` must be, so that every instance has the same observation layout). A
            string names the family of variations (``true`` is ``default``; synthetic also has
            ``wide``: three decades of scales and classification tasks, and ``wide2``: ``wide``
            with 2, 4 or 16 classes per classification task).
        instances: ``[low, high)`` range of training instance seeds drawn at ``reset`` from the
            env's ``np_random`` when no ``instance_set`` is given;
            ``reset(options={"instance": seed})`` picks one explicitly (held-out evaluation seeds,
            baselines).
        instance_set: The training instances (``igb_env.instances.InstanceSet``): a list of seeds,
            ``{"range": [low, high]}`` or a seeded sample ``{"range": [low, high], "count": n,
            "seed": s}``; ``None``: the ``instances`` range.
        test_set: The held-out instances (same forms; ``None``: none), evaluated by the agents'
            ``EvalCallback`` and ``igb evaluate``; must not overlap the training instances.
        instance_order: ``random`` (uniform draws from the env's ``np_random``; the default, as
            before instance sets existed) or ``round_robin`` (the set in order, from an offset
            drawn from ``np_random`` when the env is reset with a seed).
    """

    benchmark: MethodSpec = field(default_factory=lambda: MethodSpec("synthetic"))
    balancer: MethodSpec = field(default_factory=lambda: MethodSpec("sum"))
    train: TrainConfig = field(default_factory=_default_train)
    steps_per_action: int = 25
    action_mode: str = "residual"
    tau: float = 1.0
    reward: MethodSpec = field(default_factory=lambda: MethodSpec("val_log_improvement"))
    reward_scale: float = 10.0
    history: int = 3
    ema: float = 0.9
    feature_table: str = "v1"
    budgets: tuple[int, ...] | None = None
    divergence_penalty: float = -10.0
    val_batch_size: int = 1000
    variation: bool | str = False
    instances: tuple[int, int] = (0, 1_000_000)
    instance_set: Any = None
    test_set: Any = None
    instance_order: str = "random"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "instance_set", InstanceSet.parse(self.instance_set, "env config.instance_set")
        )
        test_set = InstanceSet.parse(self.test_set, "env config.test_set")
        object.__setattr__(self, "test_set", test_set)
        if self.instance_order not in INSTANCE_ORDERS:
            raise ConfigError(
                f"unknown instance_order {self.instance_order!r}; "
                f"valid choices: {', '.join(INSTANCE_ORDERS)}"
            )
        if self.steps_per_action < 1:
            raise ConfigError(f"steps_per_action must be >= 1, got {self.steps_per_action}")
        if self.action_mode not in ACTION_MAPS:
            raise ConfigError(
                f"unknown action_mode {self.action_mode!r}; "
                f"valid choices: {', '.join(sorted(ACTION_MAPS))}"
            )
        if not self.tau > 0:
            raise ConfigError(f"tau must be positive, got {self.tau}")
        if self.val_batch_size < 1:
            raise ConfigError(f"val_batch_size must be >= 1, got {self.val_batch_size}")
        low, high = self.instances
        if not 0 <= low < high:
            raise ConfigError(
                f"instances must be a range [low, high) with 0 <= low < high, got {self.instances}"
            )
        if self.test_set is not None:
            common = overlap(self.train_instances, self.test_instances)
            if common:
                raise ConfigError(
                    f"test_set overlaps the training instances (e.g. seeds {common}); held-out "
                    "instances must never be trained on"
                )
        bw = self.train.base_window
        if bw is not None and bw[1] >= self.train.steps:
            raise ConfigError(
                f"train.base_window {list(bw)} leaves no steps to decide: it must end before "
                f"train.steps ({self.train.steps})"
            )
        if self.reward.name not in REWARDS:
            raise ConfigError(
                f"unknown reward {self.reward.name!r}; valid choices: {', '.join(sorted(REWARDS))}"
            )
        if isinstance(self.variation, str):
            self._check_variation_family(self.variation)
        if self.budgets is not None:
            if not self.budgets:
                raise ConfigError("budgets must list at least one step budget, or be null")
            end = 0 if bw is None else bw[1]
            short = [b for b in self.budgets if b <= end]
            if short:
                raise ConfigError(
                    f"budgets {short} leave no steps to decide: each must exceed the base "
                    f"window's end ({end})"
                )
        try:
            self.feature_spec  # noqa: B018 - validates history, ema and the table
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _check_variation_family(self, family: str) -> None:
        """Refuse a family the benchmark does not draw (one draw from a throwaway generator)."""
        bench = BENCHMARKS.get(self.benchmark.name)
        if bench is None:
            return  # an unknown benchmark is reported where it is built
        try:
            bench.sample_variation(np.random.default_rng(0), family=family)
        except NotImplementedError as err:
            raise ConfigError(f"variation {family!r}: {err}") from None
        except ValueError as err:
            raise ConfigError(f"variation: {err}") from None

    @property
    def feature_spec(self) -> FeatureSpec:
        """The gap tracker's feature settings: snapshots every ``K`` steps (the decision points)."""
        return FeatureSpec(
            history=self.history,
            stride=self.steps_per_action,
            ema=self.ema,
            table=self.feature_table,
        )

    def train_for(self, instance: int) -> TrainConfig:
        """The training settings of ``instance``: ``train``, with its budget drawn from ``budgets``.

        The draw uses a generator seeded by the instance seed and a constant of its own, so it does
        not touch (or depend on) any other random stream.
        """
        if self.budgets is None:
            return self.train
        rng = np.random.default_rng([BUDGET_STREAM, int(instance)])
        steps = int(self.budgets[int(rng.integers(len(self.budgets)))])
        return replace(self.train, steps=steps)

    @property
    def train_instances(self) -> Sequence[int]:
        """The training instance seeds (``instance_set``, else the ``instances`` range)."""
        if self.instance_set is None:
            return range(*self.instances)
        seeds: Sequence[int] = self.instance_set.resolve()
        return seeds

    @property
    def test_instances(self) -> Sequence[int]:
        """The held-out instance seeds (empty without a ``test_set``)."""
        if self.test_set is None:
            return ()
        seeds: Sequence[int] = self.test_set.resolve()
        return seeds

    def to_dict(self) -> dict[str, Any]:
        """A plain (YAML/JSON-friendly) form that ``load_env_config`` turns back into it."""
        out: dict[str, Any] = to_dict(self)
        for key in ("instance_set", "test_set"):
            value = getattr(self, key)
            out[key] = None if value is None else value.to_config()
        return out


def held_out_config(config: EnvConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The env config that trains on ``config``'s held-out ``test_set``, in round-robin order.

    An env built from it (and reset without a seed) walks the held-out instances in set order, so
    ``n`` consecutive episodes cover a set of ``n`` exactly once: the eval env of agent training.

    Raises:
        ConfigError: ``config`` has no ``test_set``.
    """
    cfg = load_env_config(config)
    if cfg.test_set is None:
        raise ConfigError("the env config has no test_set (held-out instances)")
    data = cfg.to_dict()
    data.update(instance_set=data["test_set"], test_set=None, instance_order="round_robin")
    return data


PRESETS_FILE = Path(__file__).with_name("presets.yaml")


def _load_presets() -> dict[str, dict[str, Any]]:
    presets = load_yaml(PRESETS_FILE)
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ConfigError(f"{PRESETS_FILE}: expected a mapping of preset name -> env settings")
    return presets


PRESETS: dict[str, dict[str, Any]] = _load_presets()
"""Named env settings (``igb_env/presets.yaml``): ``default``, ``tiny``, ``smoke``, ``small``."""


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``; a ``train`` mapping is merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if key == "train" and isinstance(out.get(key), Mapping) and isinstance(value, Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def load_env_config(config: EnvConfig | Mapping[str, Any] | str | Path | None = None) -> EnvConfig:
    """Build an ``EnvConfig`` from a config, a mapping, a YAML path or ``None`` (the defaults).

    A mapping may hold ``preset: NAME`` (a key of ``PRESETS``); its other keys override the preset.

    Raises:
        ConfigError: Unknown keys or presets, or invalid values.
    """
    if isinstance(config, EnvConfig):
        return config
    where = "env config"
    if isinstance(config, str | Path):
        where = str(config)
        config = load_yaml(config)
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(f"{where}: expected a mapping of env settings, got {config!r}")
    data: dict[str, Any] = dict(config or {})
    preset = data.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(
                f"{where}: unknown preset {preset!r}; valid choices: {', '.join(sorted(PRESETS))}"
            )
        data = merge_config(PRESETS[preset], data)
    if isinstance(data.get("train"), Mapping):
        # Missing train keys fall back to the env's training defaults, not TrainConfig's.
        data["train"] = {**to_dict(_default_train()), **data["train"]}
    return from_dict(EnvConfig, data, where)


def resolve_env_config(
    config: EnvConfig | Mapping[str, Any] | str | Path | None, overrides: Mapping[str, Any]
) -> EnvConfig:
    """``load_env_config(config)`` with ``overrides`` (``gymnasium.make``'s keywords) merged in."""
    if not overrides:
        return load_env_config(config)
    if isinstance(config, EnvConfig):
        data: dict[str, Any] = config.to_dict()
    elif isinstance(config, str | Path):
        data = dict(load_yaml(config) or {})
    else:
        data = dict(config or {})
    return load_env_config(merge_config(data, overrides))


def config_sidecar(
    config: EnvConfig,
    algorithm: str,
    *,
    n_tasks: int | None = None,
    base_window: Sequence[int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The policy sidecar of a policy trained on env settings ``config`` (``build_sidecar``).

    The one place that maps env settings to a sidecar, so the env, ``igb export`` and
    ``igb perf`` cannot drift apart.

    Args:
        config: Resolved env settings.
        algorithm: Training algorithm, e.g. ``"PPO"``.
        n_tasks: ``T`` of a fixed-size policy; ``None`` for a set policy that runs at any ``T``.
        base_window: The base window the policy saw; defaults to ``config.train.base_window``
            (``None`` there means the second epoch, resolved per run).
        extra: Further sidecar fields (``task_names``, ``env_config``, ``versions``, ...).
    """
    bw = config.train.base_window if base_window is None else base_window
    return build_sidecar(
        n_tasks=n_tasks,
        features=config.feature_spec,
        action_mode=config.action_mode,
        tau=config.tau,
        steps_per_action=config.steps_per_action,
        balancer=config.balancer.name,
        base_window=None if bw is None else (int(bw[0]), int(bw[1])),
        total_steps=config.train.steps,
        algorithm=algorithm,
        **extra,
    )


__all__ = [
    "PRESETS",
    "EnvConfig",
    "config_sidecar",
    "held_out_config",
    "load_env_config",
    "merge_config",
    "resolve_env_config",
]
