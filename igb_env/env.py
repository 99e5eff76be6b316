"""``IGBEnv``: one multi-task training run as a Gymnasium environment (DESIGN §4).

The engine (``Episode``) has no gymnasium dependency of its own: it drives an ``MTLTrainer`` K steps
at a time with whatever ``LossWeighting`` it is given. ``IGBEnv`` gives it a weighting that applies
the agent's held action through the action map; ``rollout_baseline`` gives it a registered weighting
(EW, IGBv1, an exported ``policy``, ...) on the same instance, so their returns are reference lines
for the agent's.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from igb_env.actions import HeldAction, action_space, check_action
from igb_env.config import PRESETS, EnvConfig, _merge, load_env_config
from igb_env.instances import InstanceSampler
from igb_env.observations import observation_names, observation_space, observation_table
from igb_env.rewards import RewardInput, get_reward
from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import BENCHMARKS, Benchmark, make_benchmark, predict
from mtl_backends.config import MethodSpec, load_yaml
from mtl_backends.progress import FeatureSpec
from mtl_backends.registry import ConfigError, valid_arguments
from mtl_backends.trainer import DivergenceError, MTLTrainer
from mtl_backends.weightings import LossWeighting, StepContext, make_weighting

ENV_ID = "igb_env/IGB-v0"


class HeldActionWeighting(LossWeighting):
    """The env's weighting: the agent's action, held for K steps, through the action map.

    Before the base losses exist the weights are 1; until the first action arrives the held action
    is 0 (so ``residual`` is IGBv1 and ``absolute`` is SI there). Transform ``log``.

    Args:
        mode: Action map (``absolute`` or ``residual``).
        tau: Action temperature.
    """

    transform = "log"

    def __init__(self, mode: str, tau: float) -> None:
        self.held = HeldAction(mode, tau)

    @property
    def mode(self) -> str:
        """Action map."""
        return self.held.mode

    @property
    def tau(self) -> float:
        """Action temperature."""
        return self.held.tau

    @property
    def action(self) -> Tensor | None:
        """The held action (``None`` before the first one)."""
        return self.held.action

    def hold(self, action: Tensor | None) -> None:
        """Hold the action ``[T]`` of the next K steps (``None``: release it).

        Raises:
            ValueError: Wrong shape or a NaN / infinite entry.
        """
        self.held.hold(action, self.n_tasks)

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Forget the held action."""
        super().reset(n_tasks, generator)
        self.held.hold(None, n_tasks)

    def __call__(self, context: StepContext) -> Tensor:
        """Weights of the held action with the current gaps."""
        return self.held.weights(context.progress)

    def state_dict(self) -> dict[str, Any]:
        """The held action."""
        action = self.held.action
        return {"action": None if action is None else action.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the held action."""
        self.held.hold(state["action"], self.n_tasks)


@dataclass
class StepOutcome:
    """What one env step (K trainer steps) produced.

    Attributes:
        reward: The reward (the divergence penalty when ``diverged``).
        terminated: Budget spent or training diverged.
        diverged: A loss (or the reward) became non-finite.
        weights: Mean weights applied over the step's trainer steps ``[T]``.
        val_losses: Validation losses after the step (when the reward uses them).
    """

    reward: float
    terminated: bool
    diverged: bool
    weights: np.ndarray
    val_losses: np.ndarray | None


class Episode:
    """One MTL run driven K trainer steps at a time; the engine of ``IGBEnv``.

    ``start()`` runs the base window (unit weights on log losses until the base losses exist) and
    absorbs the first decision batch; each ``advance()`` applies the weighting for K steps, absorbs
    the next batch and computes the reward.

    Args:
        config: The env configuration.
        benchmark: The instance's benchmark (data seeded by the instance seed).
        weighting: Decides every step's weights (``trainer.apply(None)``).
        instance: Instance seed: model initialisation, batch order and the trainer's RNG streams.
    """

    def __init__(
        self, config: EnvConfig, benchmark: Benchmark, weighting: LossWeighting, instance: int
    ) -> None:
        self.config = config
        self.instance = int(instance)
        self.benchmark = benchmark
        self.trainer = MTLTrainer(
            benchmark,
            weighting,
            make_balancer(config.balancer.name, **dict(config.balancer.kwargs)),
            config.train,
            seed=self.instance,
            features=config.feature_spec,
        )
        self.reward = get_reward(config.reward.name)
        self.reward_kwargs = dict(config.reward.kwargs)
        self.lower_bounds = benchmark.lower_bounds.detach().to(torch.float64).numpy()
        self._val: tuple[Tensor, Tensor] | None = None
        if self.reward.needs_validation:
            val = benchmark.split("val")
            n = min(config.val_batch_size, len(val))
            self._val = (
                val.inputs[:n].to(self.trainer.device),
                val.targets[:n].to(self.trainer.device),
            )
        self.val_losses: np.ndarray | None = None
        self.window_losses: np.ndarray | None = None
        self.over = False

    @property
    def progress(self) -> Any:
        """The trainer's gap tracker."""
        return self.trainer.progress

    def start(self) -> None:
        """Run the base window and absorb the batch of the first decision.

        Raises:
            DivergenceError: Training diverged inside the base window.
        """
        trainer = self.trainer
        first = trainer.progress.base_window[1]
        while trainer.step_count < first:
            trainer.step()
        trainer.forward()
        assert trainer.progress.base_losses is not None
        self.window_losses = trainer.progress.base_losses.numpy().copy()
        self.val_losses = self._validation_losses()

    def _validation_losses(self) -> np.ndarray | None:
        if self._val is None:
            return None
        x, y = self._val
        trainer = self.trainer
        with torch.no_grad():
            outputs = predict(trainer.model, x, trainer.config.eval_batch_size)
            losses = self.benchmark.losses(outputs, y)
        return losses.detach().to("cpu", torch.float64).numpy()

    def observation(self) -> np.ndarray:
        """The current features (float32, clipped to the table's bounds)."""
        obs: np.ndarray = self.trainer.progress.features()
        return obs

    def advance(self) -> StepOutcome:
        """Apply the weighting for K trainer steps (fewer at the end of the budget)."""
        if self.over:
            raise RuntimeError("the episode is over (budget spent or diverged); call reset()")
        trainer = self.trainer
        n_tasks = trainer.n_tasks
        # Per-step losses and weights are kept as tensors and averaged once per env step
        # (``_row_mean``): a float64 conversion per trainer step cost ~1% of a synthetic step.
        step_losses: list[torch.Tensor] = []
        step_weights: list[torch.Tensor] = []
        try:
            for k in range(self.config.steps_per_action):
                if k > 0:
                    if trainer.done:
                        break
                    trainer.forward()
                result = trainer.apply()
                step_losses.append(result.losses)
                step_weights.append(result.weights)
            done = trainer.done
            if not done:
                trainer.forward()
            val_now = self._validation_losses()
            assert self.window_losses is not None and trainer.progress.base_losses is not None
            window = _row_mean(step_losses)
            inputs = RewardInput(
                losses_prev=self.window_losses,
                losses_now=window,
                base_losses=trainer.progress.base_losses.numpy(),
                lower_bounds=self.lower_bounds,
                lr_ratio=trainer.progress.lr_ratio,
                val_prev=self.val_losses,
                val_now=val_now,
            )
            finite_val = val_now is None or bool(np.isfinite(val_now).all())
            reward = (
                self.reward(inputs, self.config.reward_scale, **self.reward_kwargs)
                if finite_val
                else math.nan
            )
        except DivergenceError:
            reward = math.nan
            done = True
            window, val_now = np.full(n_tasks, math.nan), None
        weights = _row_mean(step_weights) if step_weights else np.zeros(n_tasks)
        if not math.isfinite(reward):
            self.over = True
            return StepOutcome(float(self.config.divergence_penalty), True, True, weights, val_now)
        self.window_losses, self.val_losses = window, val_now
        self.over = done
        return StepOutcome(reward, done, False, weights, val_now)


def _row_mean(rows: list[torch.Tensor]) -> np.ndarray:
    """Float64 mean of equal-length 1-D tensors.

    numpy reduces axis 0 row by row, so the result equals a running float64 sum divided by the
    count bit for bit (the env's numbers before it kept tensors).
    """
    total: np.ndarray = torch.stack(rows).to(torch.float64).numpy().sum(axis=0)
    return total / len(rows)


@dataclass
class Rollout:
    """One episode run with a fixed weighting (a baseline reference).

    Attributes:
        weighting: Registry name of the weighting.
        instance: Instance seed.
        rewards: Reward of every env step.
        weights: Mean weights of every env step.
        diverged: Whether training diverged.
    """

    weighting: str
    instance: int
    rewards: list[float] = field(default_factory=list)
    weights: list[list[float]] = field(default_factory=list)
    diverged: bool = False

    @property
    def total_reward(self) -> float:
        """Undiscounted return (what ``Monitor`` reports for the agent)."""
        return float(sum(self.rewards))

    def discounted_return(self, gamma: float) -> float:
        """``sum_i gamma^i r_i``."""
        return float(sum(r * gamma**i for i, r in enumerate(self.rewards)))


class BenchmarkCache:
    """Builds instance benchmarks, keeping the last few (data generation dominates a reset).

    Args:
        spec: Benchmark name and arguments.
        size: Instances kept.
        variation: Draw each instance's arguments with the benchmark's ``sample_variation`` from
            a generator seeded by the instance seed (the arguments in ``spec`` stay fixed).
    """

    def __init__(self, spec: MethodSpec, size: int = 2, variation: bool = False) -> None:
        self.spec = spec
        self.size = size
        self.variation = variation
        self._items: OrderedDict[int, Benchmark] = OrderedDict()
        cls = BENCHMARKS.get(spec.name)
        self.seeded = variation or (
            cls is not None and "seed" in valid_arguments(cls) and "seed" not in spec.kwargs
        )

    def kwargs_for(self, instance: int) -> dict[str, Any]:
        """Constructor arguments of the benchmark of ``instance``."""
        kwargs = dict(self.spec.kwargs)
        if self.variation:
            cls = BENCHMARKS[self.spec.name]
            rng = np.random.default_rng(np.random.SeedSequence(int(instance)))
            return cls.sample_variation(rng, **kwargs)
        if self.seeded:
            kwargs["seed"] = int(instance)
        return kwargs

    def spec_for(self, instance: int) -> MethodSpec:
        """The benchmark spec of ``instance`` (name and ``kwargs_for``), for plain trainer runs."""
        return MethodSpec(self.spec.name, self.kwargs_for(instance))

    def get(self, instance: int) -> Benchmark:
        """The benchmark of ``instance`` (data seeded by it when the benchmark takes a seed)."""
        key = int(instance) if self.seeded else 0
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        bench = make_benchmark(self.spec.name, **self.kwargs_for(key))
        self._items[key] = bench
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return bench


_DOC_TABLE_MARK = "<<observation table>>"


class IGBEnv(gym.Env[np.ndarray, np.ndarray]):
    """An MTL training run whose task loss weights an agent sets.

    ## Description

    Each episode is one short multi-task training run (an *instance*: benchmark data, model
    initialisation and batch order all seeded by the instance seed) with the two-phase
    ``MTLTrainer``. Every env step the agent sees each task's improvable gap
    ``g_t = (L_t - L*_t) / (L_base,t - L*_t)`` and its history, chooses an action that the action
    map turns into task weights ``w`` (summing to ``T``), and the trainer takes ``K``
    (``steps_per_action``) optimizer steps on ``Σ_t w_t log(L_t - L*_t + eps)``; in ``residual``
    mode the weights are recomputed at each of those steps from the held action and the current
    batch's gaps. The weights act after the gradient balancer (``balancer``, default ``sum``).

    ## Action Space

    ``Box(-1, 1, (T,), float32)``. ``action_mode="residual"`` (default):
    ``w = T · softmax(g + τ a)``, so ``a = 0`` is IGBv1 exactly; ``"absolute"``:
    ``w = T · softmax(τ a)`` (``a = 0`` is SI; the largest weight ratio is ``exp(2τ)``). Actions are
    clipped to ``[-1, 1]``; a NaN/inf or wrongly shaped action raises ``ValueError`` and leaves the
    env unchanged.

    ## Observation Space

    ``Box(float32)`` of size ``F·T + 2``, task-major (all features of task 1, then task 2, ...,
    then the global features), every entry clipped to its bounds. Generated from
    ``mtl_backends.progress.feature_table`` (shown for the default ``history=3``):

    <<observation table>>

    ## Rewards

    By name (``reward``; ``igb_env.rewards.REWARDS``), times ``reward_scale``:
    ``val_log_improvement`` (default): the mean over tasks of the decrease of the log validation
    loss on a fixed held-in validation batch (the first ``val_batch_size`` rows of the instance's
    ``val`` split) since the previous step; it telescopes to the episode's total improvement.
    ``mean_log_gap_decrease``: the same on the window-mean training loss. ``min_gap_decrease``:
    IGBv2's worst-task base-normalised decrease (optional capped LR factor). Always a finite Python
    ``float``; the step in which training diverges gets ``divergence_penalty``.

    ## Starting State

    ``reset`` takes the next instance seed of the training set (``instance_set``, default the
    ``instances`` range) in ``instance_order``: ``random`` (default) draws uniformly with the env's
    ``np_random``, ``round_robin`` walks the set from an offset drawn from ``np_random`` when
    ``reset`` gets a seed (``get_instance_state`` / ``set_instance_state`` save and restore the
    position). ``options={"instance": seed}`` picks any seed (held-out ones too); with
    ``variation=True`` the seed also draws the benchmark's variation, e.g. task scales. It builds
    a fresh trainer, runs the base window (``train.base_window``, unit weights on log losses until
    the base losses exist, then the action map at ``a = 0``) and absorbs the first decision's
    batch. The base window counts toward the budget ``train.steps``.

    ## Episode End

    ``terminated=True`` when the budget is spent (the observation carries the progress fraction,
    so the MDP is time-aware) or when training diverges (a non-finite loss or reward:
    ``info["diverged"] = True``, the fixed penalty, nothing raised). ``truncated`` is always
    ``False`` (it is for outside time limits). An episode has ``ceil((steps - base_end) / K)``
    steps (36 with the defaults).

    ## Arguments

    ``gymnasium.make("igb_env/IGB-v0", config=None, **overrides)`` or
    ``igb_env.make_env(config)``; ``config`` is an ``EnvConfig``, a mapping of its fields (with an
    optional ``preset``, e.g. ``"tiny"``) or a YAML path. Fields: ``benchmark``, ``balancer``,
    ``train``, ``steps_per_action``, ``action_mode``, ``tau``, ``reward``, ``reward_scale``,
    ``history``, ``ema``, ``divergence_penalty``, ``val_batch_size``, ``variation``,
    ``instances``, ``instance_set``, ``test_set``, ``instance_order`` (see
    ``igb_env.config.EnvConfig``; all instances of a set must have the same T, checked when the env
    is built). ``info`` holds ``instance``, ``train_step``, ``weights`` (mean
    weights applied in the step), ``gaps`` (current raw gaps), ``diverged`` and, with a validation
    reward, ``val_losses``; no wall-clock values.

    Same seed, same episode, bit for bit (CPU, fixed thread count): env steps run under the
    trainer's own torch RNG stream, so the agent's use of the global RNG cannot disturb them.

    ## Version History

    * v0: initial version (action maps ``absolute``/``residual`` v1, feature table of
      ``mtl_backends.progress``).
      Instance sets (``instance_set``, ``test_set``, ``instance_order``) were added to v0 without
      a bump: with their defaults the env draws exactly the same instances as before.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium API

    def __init__(
        self,
        config: EnvConfig | Mapping[str, Any] | str | Path | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        self.config = _resolve(config, overrides)
        self.render_mode = render_mode
        self._benchmarks = BenchmarkCache(self.config.benchmark, variation=self.config.variation)
        self._sampler = InstanceSampler(self.config.train_instances, self.config.instance_order)
        probe = self._benchmarks.get(self._sampler.instances[0])
        self.n_tasks = probe.n_tasks
        self.task_names = tuple(probe.task_names)
        check_instance_set(self._benchmarks, self._sampler.instances, self.n_tasks, "instance_set")
        self.feature_spec: FeatureSpec = self.config.feature_spec
        self.observation_space = observation_space(self.n_tasks, self.feature_spec)
        self.action_space = action_space(self.n_tasks)
        self.observation_names = observation_names(self.task_names, self.feature_spec)
        self._weighting = HeldActionWeighting(self.config.action_mode, self.config.tau)
        self._episode: Episode | None = None
        self._obs: np.ndarray | None = None
        self._low, self._high = self.observation_space.low, self.observation_space.high

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode on a new instance; see the class docstring (Starting State)."""
        super().reset(seed=seed)
        if seed is not None:
            self._sampler.reseed(self.np_random)
        options = dict(options or {})
        unknown = [k for k in options if k != "instance"]
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {', '.join(map(repr, unknown))}; "
                "valid options: 'instance'"
            )
        instance = options.get("instance")
        if instance is None:
            instance = self._sampler.next(self.np_random)
        bench = self._benchmarks.get(int(instance))
        if bench.n_tasks != self.n_tasks:
            raise ValueError(
                f"instance {instance} has {bench.n_tasks} tasks but the env was built for "
                f"{self.n_tasks}; fix n_tasks in the benchmark arguments"
            )
        episode = Episode(self.config, bench, self._weighting, int(instance))
        episode.start()
        self._episode = episode
        self._obs = self._clip(episode.observation())
        weights = episode.progress.last_weights.numpy().copy()
        return self._obs.copy(), self._info(weights, diverged=False, val_losses=episode.val_losses)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` for K trainer steps; see the class docstring."""
        if self._episode is None or self._obs is None:
            raise RuntimeError("call reset() before step()")
        a = check_action(action, self.n_tasks)  # ValueError before any change
        episode = self._episode
        self._weighting.hold(a)
        outcome = episode.advance()
        if not outcome.diverged:
            self._obs = self._clip(episode.observation())
        info = self._info(outcome.weights, diverged=outcome.diverged, val_losses=outcome.val_losses)
        return self._obs.copy(), float(outcome.reward), bool(outcome.terminated), False, info

    def render(self) -> None:
        """No rendering (``render_modes`` is empty); TensorBoard logs are the agents' job."""
        return None

    # -- helpers --------------------------------------------------------------------------------
    def _clip(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(obs, self._low, self._high).astype(np.float32)

    def _info(
        self, weights: np.ndarray, diverged: bool, val_losses: np.ndarray | None
    ) -> dict[str, Any]:
        assert self._episode is not None
        progress = self._episode.progress
        gaps = progress.gaps
        info: dict[str, Any] = {
            "instance": self._episode.instance,
            "train_step": int(self._episode.trainer.step_count),
            "weights": np.asarray(weights, dtype=np.float64).copy(),
            "gaps": np.zeros(self.n_tasks) if gaps is None else gaps.numpy().copy(),
            "diverged": bool(diverged),
        }
        if self._episode.reward.needs_validation:
            info["val_losses"] = (
                np.full(self.n_tasks, np.nan)
                if val_losses is None
                else np.asarray(val_losses).copy()
            )
        return info

    @property
    def episode(self) -> Episode | None:
        """The current episode's engine (with its ``trainer``), or ``None`` before reset."""
        return self._episode

    @property
    def instance(self) -> int | None:
        """Instance seed of the current episode."""
        return None if self._episode is None else self._episode.instance

    @property
    def instances(self) -> Sequence[int]:
        """The training instance set this env draws from at ``reset``."""
        return self._sampler.instances

    def get_instance_state(self) -> dict[str, Any]:
        """Where the env is in its instance set: the sampler's cursor and ``np_random``'s state.

        JSON-friendly; an agent checkpoint saves it for every sub-env (``env_method``).
        """
        return {
            "sampler": self._sampler.state_dict(),
            "np_random": _jsonable(self.np_random.bit_generator.state),
        }

    def set_instance_state(self, state: Mapping[str, Any]) -> None:
        """Restore ``get_instance_state()``: the next seedless ``reset`` continues from there."""
        self._sampler.load_state_dict(state["sampler"])
        rng = self.np_random  # creates the generator when the env was never reset
        rng.bit_generator.state = dict(state["np_random"])

    @property
    def episode_length(self) -> int:
        """Env steps per episode (when training does not diverge)."""
        base_end = self._episode.progress.base_window[1] if self._episode is not None else None
        if base_end is None:
            bw = self.config.train.base_window
            if bw is None:
                raise RuntimeError("the base window is the second epoch: call reset() to know it")
            base_end = bw[1]
        return math.ceil((self.config.train.steps - base_end) / self.config.steps_per_action)

    def rollout_baseline(
        self, weighting: str | MethodSpec | Mapping[str, Any], instance: int
    ) -> Rollout:
        """Run ``instance`` with a fixed registered weighting; see ``rollout_baseline``."""
        return rollout_baseline(self.config, weighting, instance, benchmarks=self._benchmarks)

    def policy_sidecar(self, algorithm: str, **extra: Any) -> dict[str, Any]:
        """The sidecar of a policy trained on this env (``mtl_backends.weightings.policy``).

        Args:
            algorithm: Training algorithm, e.g. ``"PPO"``.
            extra: Further sidecar fields (``network``, ``obs_normalization``, ``versions`` are
                filled by ``save_policy`` when absent).
        """
        from mtl_backends.weightings.policy import build_sidecar

        bw = (
            self._episode.progress.base_window
            if self._episode is not None
            else self.config.train.base_window
        )
        return build_sidecar(
            n_tasks=self.n_tasks,
            features=self.feature_spec,
            action_mode=self.config.action_mode,
            tau=self.config.tau,
            steps_per_action=self.config.steps_per_action,
            balancer=self.config.balancer.name,
            base_window=None if bw is None else (int(bw[0]), int(bw[1])),
            total_steps=self.config.train.steps,
            algorithm=algorithm,
            task_names=list(self.task_names),
            env_config=self.config.to_dict(),
            **extra,
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value


# Instance sets larger than this are checked on their first CHECK_LIMIT instances at build time
# (and every instance again at reset).
CHECK_LIMIT = 1024


def check_instance_set(
    benchmarks: BenchmarkCache, instances: Sequence[int], n_tasks: int, name: str
) -> None:
    """Refuse an instance set whose instances do not all have ``n_tasks`` tasks.

    Without ``variation`` every instance has the benchmark's arguments (only the seed differs), so
    T is the probe's. With it, T is read from each instance's sampled arguments (``n_tasks``;
    samplers that omit it keep the probe's T), without building any data. The feature table
    depends only on T and the env's feature settings, so equal T means equal feature tables.

    Raises:
        ConfigError: An instance with another T, naming it.
    """
    if not benchmarks.variation:
        return
    for seed in itertools.islice(instances, CHECK_LIMIT):
        got = benchmarks.kwargs_for(int(seed)).get("n_tasks", n_tasks)
        if int(got) != n_tasks:
            raise ConfigError(
                f"{name}: instance {seed} has {got} tasks but the set's first instance has "
                f"{n_tasks}; all instances of a set must share T and the feature table"
            )


def _resolve(
    config: EnvConfig | Mapping[str, Any] | str | Path | None, overrides: Mapping[str, Any]
) -> EnvConfig:
    if not overrides:
        return load_env_config(config)
    if isinstance(config, EnvConfig):
        data: dict[str, Any] = config.to_dict()
    elif isinstance(config, str | Path):
        data = dict(load_yaml(config) or {})
    else:
        data = dict(config or {})
    return load_env_config(_merge(data, overrides))


def rollout_baseline(
    config: EnvConfig | Mapping[str, Any] | str | Path | None,
    weighting: str | MethodSpec | Mapping[str, Any],
    instance: int,
    benchmarks: BenchmarkCache | None = None,
) -> Rollout:
    """Run one instance with a fixed registered weighting and the env's step and reward definitions.

    The trainer, data, base window, decision points and reward are those of the env on the same
    instance, so the return is a reference line for the agent's (``igbv1`` equals the env with
    ``residual`` actions of 0, bit for bit; ``ew`` trains raw losses).

    Args:
        config: Env configuration.
        weighting: Registry name (``"ew"``, ``"igbv1"``, ...) or a ``{"name": ..., **kwargs}``
            mapping (e.g. ``{"name": "policy", "path": ...}``).
        instance: Instance seed.
        benchmarks: Cache of built benchmarks (default: a new one).

    Returns:
        The per-step rewards and weights.
    """
    cfg = load_env_config(config)
    spec = MethodSpec.parse(weighting, "weighting")
    cache = (
        benchmarks
        if benchmarks is not None
        else BenchmarkCache(cfg.benchmark, variation=cfg.variation)
    )
    episode = Episode(
        cfg, cache.get(instance), make_weighting(spec.name, **dict(spec.kwargs)), instance
    )
    episode.start()
    rollout = Rollout(weighting=spec.name, instance=int(instance))
    while not episode.over:
        outcome = episode.advance()
        rollout.rewards.append(float(outcome.reward))
        rollout.weights.append([float(w) for w in outcome.weights])
        rollout.diverged = outcome.diverged
    return rollout


def rollout_policy(
    env: IGBEnv, act: Callable[[np.ndarray], np.ndarray], instance: int
) -> tuple[list[float], list[np.ndarray]]:
    """Run one episode of ``env`` on ``instance`` with ``act(obs) -> action``.

    Returns:
        The rewards and the actions taken.
    """
    obs, _ = env.reset(options={"instance": int(instance)})
    rewards: list[float] = []
    actions: list[np.ndarray] = []
    terminated = truncated = False
    while not (terminated or truncated):
        action = np.asarray(act(obs))
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        actions.append(action)
    return rewards, actions


def _render_doc(doc: str | None, spec: FeatureSpec) -> str:
    doc = doc or ""
    line = next(ln for ln in doc.splitlines() if _DOC_TABLE_MARK in ln)
    indent = line[: len(line) - len(line.lstrip())]
    table = "\n".join(indent + row for row in observation_table(spec).splitlines())
    return doc.replace(line, table)


IGBEnv.__doc__ = _render_doc(IGBEnv.__doc__, load_env_config(None).feature_spec)

__all__ = [
    "ENV_ID",
    "PRESETS",
    "BenchmarkCache",
    "Episode",
    "HeldActionWeighting",
    "IGBEnv",
    "Rollout",
    "StepOutcome",
    "rollout_baseline",
    "rollout_policy",
]
