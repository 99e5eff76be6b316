"""``IGBEnv``: one multi-task training run as a Gymnasium environment.

The MDP is described in the class docstring (Gymnasium's sections) and in
``docs/architecture.md`` ("The env step"). The engine that runs the MTL training is
``igb_env.episode.Episode`` (no gymnasium); instances come from ``igb_env.instances``; the
reference rollouts of fixed weightings live in ``igb_env.rollouts``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from igb_env.actions import action_space
from igb_env.config import EnvConfig, config_sidecar, load_env_config, resolve_env_config
from igb_env.episode import Episode, HeldActionWeighting
from igb_env.instances import (
    BenchmarkCache,
    InstanceSampler,
    check_instance_set,
    jsonable,
    reset_options,
)
from igb_env.observations import observation_space
from igb_env.rollouts import Rollout, rollout_baseline
from mtl_backends.config import MethodSpec
from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.policy.action_maps import check_action
from mtl_backends.results import DivergenceError

ENV_ID = "igb_env/IGB-v0"


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
    ``mtl_backends.features.FeatureTable`` (shown for the default ``history=3``):

    <<observation table>>

    ## Rewards

    By name (``reward``; ``igb_env.rewards.REWARDS``), times ``reward_scale``:
    ``val_log_improvement`` (default): the mean over tasks of the decrease of the log validation
    loss on a fixed held-in validation batch (the first ``val_batch_size`` rows of the instance's
    ``val`` split) since the previous step; it telescopes to the episode's total improvement.
    ``mean_log_gap_decrease``: the same on the window-mean training loss. ``min_gap_decrease``:
    IGBv2's worst-task base-normalised decrease (optional capped LR factor).
    ``val_log_metric_improvement``: the mean over the benchmark's metrics (accuracy, MSE, ...) of
    the signed change of their log on the same validation batch (``+`` where higher is better):
    the log form of validation Δm, which does not pay for a saturated classifier's loss falling
    further. Always a finite Python
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
    so the MDP is time-aware) or when training diverges (a non-finite loss or reward, or a loss
    above ``train.divergence_factor`` times its first-step value: ``info["diverged"] = True``, the
    fixed penalty, nothing raised). A run that diverges inside the base window, before the first
    decision, does not make ``reset`` raise: ``reset`` returns the zero observation (clipped to
    the bounds) with ``info["diverged"] = True`` and the next ``step`` ends the episode
    (``terminated``, reward 0: no action was taken into account, nothing is trained).
    ``truncated`` is always ``False`` (it is for outside time limits). An episode has
    ``ceil((steps - base_end) / K)`` steps (36 with the defaults).

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
        self.config = resolve_env_config(config, overrides)
        self.render_mode = render_mode
        self._benchmarks = BenchmarkCache(self.config.benchmark, variation=self.config.variation)
        self._sampler = InstanceSampler(self.config.train_instances, self.config.instance_order)
        probe = self._benchmarks.get(self._sampler.instances[0])
        self.n_tasks = probe.n_tasks
        self.task_names = tuple(probe.task_names)
        check_instance_set(self._benchmarks, self._sampler.instances, self.n_tasks, "instance_set")
        self.feature_spec: FeatureSpec = self.config.feature_spec
        self.feature_table = FeatureTable(self.feature_spec)
        self.observation_space = observation_space(self.feature_table, self.n_tasks)
        self.observation_names = self.feature_table.names(self.task_names)
        self._weighting = HeldActionWeighting(self.config.action_mode, self.config.tau)
        self.action_dim = self._weighting.held.map.action_dim(self.n_tasks)
        self.action_space = action_space(self.action_dim)
        self._episode: Episode | None = None
        self._obs: np.ndarray | None = None
        # The current run diverged inside its base window (reset); the next step ends it.
        self._diverged_at_reset = False
        self._low, self._high = self.observation_space.low, self.observation_space.high

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode on a new instance; see the class docstring (Starting State)."""
        super().reset(seed=seed)
        if seed is not None:
            self._sampler.reseed(self.np_random)
        options = reset_options(options, ("instance",))
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
        self._episode = episode
        try:
            episode.start()
        except DivergenceError:
            # Gymnasium's reset cannot end an episode: report the divergence and end it at the
            # next step (an agent's vectorised env resets again automatically).
            self._diverged_at_reset = True
            self._obs = self._clip(np.zeros_like(self._low))
            weights = episode.progress.last_weights.numpy().copy()
            return self._obs.copy(), self._info(weights, diverged=True, val_losses=None)
        self._diverged_at_reset = False
        self._obs = self._clip(episode.observation())
        weights = episode.progress.last_weights.numpy().copy()
        return self._obs.copy(), self._info(weights, diverged=False, val_losses=episode.val_losses)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` for K trainer steps; see the class docstring."""
        if self._episode is None or self._obs is None:
            raise RuntimeError("call reset() before step()")
        a = check_action(action, self.action_dim)  # ValueError before any change
        episode = self._episode
        if self._diverged_at_reset:
            self._diverged_at_reset = False
            episode.over = True  # a further step() asks for reset()
            info = self._info(np.zeros(self.n_tasks), diverged=True, val_losses=None)
            return self._obs.copy(), 0.0, True, False, info
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
            "np_random": jsonable(self.np_random.bit_generator.state),
        }

    def set_instance_state(self, state: Mapping[str, Any]) -> None:
        """Restore ``get_instance_state()``: the next seedless ``reset`` continues from there."""
        self._sampler.load_state_dict(state["sampler"])
        rng = self.np_random  # creates the generator when the env was never reset
        rng.bit_generator.state = dict(state["np_random"])

    @property
    def episode_length(self) -> int:
        """Env steps per episode (when training does not diverge; the current one with budgets)."""
        if self._episode is not None:
            steps = self._episode.trainer.config.steps
            base_end = self._episode.progress.base_window[1]
        else:
            if self.config.budgets is not None:
                raise RuntimeError("the budget is drawn per instance: call reset() to know it")
            bw = self.config.train.base_window
            if bw is None:
                raise RuntimeError("the base window is the second epoch: call reset() to know it")
            steps, base_end = self.config.train.steps, bw[1]
        return math.ceil((steps - base_end) / self.config.steps_per_action)

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
        bw = self._episode.progress.base_window if self._episode is not None else None
        return config_sidecar(
            self.config,
            algorithm,
            n_tasks=self.n_tasks,
            base_window=bw,
            task_names=list(self.task_names),
            env_config=self.config.to_dict(),
            **extra,
        )


def _render_doc(doc: str | None, spec: FeatureSpec) -> str:
    doc = doc or ""
    line = next(ln for ln in doc.splitlines() if _DOC_TABLE_MARK in ln)
    indent = line[: len(line) - len(line.lstrip())]
    table = "\n".join(indent + row for row in FeatureTable(spec).markdown().splitlines())
    return doc.replace(line, table)


IGBEnv.__doc__ = _render_doc(IGBEnv.__doc__, load_env_config(None).feature_spec)

__all__ = ["ENV_ID", "IGBEnv"]
