"""``BatchedIGBEnv``: N instances of ``IGBEnv`` as one Gymnasium vector env, stepped in one process.

``gymnasium.make_vec("igb_env/IGB-v0", num_envs=N, vectorization_mode="vector_entry_point",
config=...)`` builds it. Every sub-env is the MDP of ``IGBEnv`` (same spaces, reward, episode end
and info), but the N MTL runs are trained together by one stacked trainer
(``igb_env.batched.BatchedEpisodes``), which makes experience several times cheaper per
CPU-second than N separate envs (``igb perf``: ``batched_env_speedup``).

Sub-env ``i`` walks its own instance sampler with its own generator, the ``i``-th child of
``numpy.random.SeedSequence(seed)`` when ``reset(seed=seed)``; ``reset(options={"instances":
[...]})`` picks the instances. All sub-envs share one configuration (T, budget, K, reward), so
their episodes run in step; a sub-env whose run diverges ends its own episode only (penalty,
``info["diverged"]``) and starts again on its next instance while the others go on.

Autoreset follows Gymnasium 1.x (``metadata["autoreset_mode"]``): ``next_step`` (default) resets a
sub-env on the step after its episode ended (that step's action is ignored, its reward is 0 and
the observation is the first of the new episode); ``same_step`` resets it within the step that
ended the episode and returns the terminal observation and info in ``info["final_obs"]`` /
``info["final_info"]`` (what SB3's ``VecEnv`` expects; ``agents.vec_env.BatchedVecEnv``).
Instances of a different T cannot share the stack: use one vector env per T.

``paired_baseline=True`` trains each sub-env's run beside a twin: the same instance (data,
initialisation, batch order, budget) trained in lockstep under the zero action, and reports the
reward minus the twin's reward of the same step (``info["baseline_reward"]``). With the ``interp``
action map the twin is IGBv1, so returns read as the gain over IGBv1. The twin's reward depends on
the instance only, never on the sub-env's actions, so subtracting it leaves the policy gradient
unbiased while it removes the instance-to-instance spread of returns (a control variate; it costs
a second run per sub-env). A twin whose run diverges counts 0 for the rest of its episode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from igb_env.actions import action_space
from igb_env.batched import BatchedEpisodes
from igb_env.config import EnvConfig, resolve_env_config
from igb_env.instances import (
    BenchmarkCache,
    InstanceSampler,
    check_instance_set,
    jsonable,
    reset_options,
)
from igb_env.observations import observation_space
from mtl_backends.features import FeatureTable
from mtl_backends.policy.action_maps import make_action_map
from mtl_backends.registry import ConfigError
from mtl_backends.stacked import AdamImpl, check_stackable_config

AUTORESET_MODES: dict[str, AutoresetMode] = {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
}
MAX_START_TRIES = 10
"""Instances tried in a row for a sub-env whose run diverges inside its base window."""


def check_batchable(config: EnvConfig) -> None:
    """Refuse an env configuration the stacked trainer cannot train.

    Raises:
        ConfigError: Training settings the stacked trainer does not implement (naming
            ``vec_env: subproc`` as the alternative).
    """
    try:
        check_stackable_config(config.train)
    except ValueError as err:
        raise ConfigError(
            f"the batched env cannot train this configuration: {err}; use separate envs "
            "(agent config vec_env: subproc or dummy)"
        ) from err


class BatchedIGBEnv(VectorEnv):
    """N ``IGBEnv`` sub-envs trained together in one process (see the module docstring).

    Args:
        num_envs: Number of sub-envs ``N``.
        config: An ``EnvConfig``, its mapping form (a ``preset`` key allowed) or a YAML path.
        autoreset_mode: ``next_step`` (default), ``same_step``, or the ``AutoresetMode``.
        adam: The stacked trainer's Adam (``fused`` default, ``foreach``).
        paired_baseline: Report rewards relative to a zero-action twin run of the same instance
            (see the module docstring).
        **overrides: Env settings merged over ``config``.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 - gymnasium API
        "render_modes": [],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 16,
        config: EnvConfig | Mapping[str, Any] | str | Path | None = None,
        autoreset_mode: str | AutoresetMode = "next_step",
        adam: AdamImpl = "fused",
        paired_baseline: bool = False,
        **overrides: Any,
    ) -> None:
        self.paired_baseline = bool(paired_baseline)
        self.config = resolve_env_config(config, overrides)
        mode = AUTORESET_MODES.get(str(autoreset_mode), autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(
                f"unknown autoreset_mode {autoreset_mode!r}; valid choices: "
                f"{', '.join(AUTORESET_MODES)}"
            )
        self.autoreset_mode = AutoresetMode(mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = int(num_envs)
        cfg = self.config
        check_batchable(cfg)
        self._cache = BenchmarkCache(cfg.benchmark, size=1, variation=cfg.variation)
        instances = cfg.train_instances
        probe = self._cache.get(int(instances[0]))
        self.n_tasks = probe.n_tasks
        self.task_names = tuple(probe.task_names)
        check_instance_set(self._cache, instances, self.n_tasks, "instance_set")
        self.feature_table = FeatureTable(cfg.feature_spec)
        self.action_dim = make_action_map(cfg.action_mode, cfg.tau).action_dim(self.n_tasks)
        self.single_observation_space = observation_space(self.feature_table, self.n_tasks)
        self.single_action_space = action_space(self.action_dim)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_names = self.feature_table.names(self.task_names)
        self._low = self.single_observation_space.low
        self._high = self.single_observation_space.high
        # Twins live in the engine's slots N..2N-1: slot N + i runs sub-env i's instance.
        slots = self.num_envs * (2 if self.paired_baseline else 1)
        self.engine = BatchedEpisodes(cfg, slots, self._cache, adam=adam)
        self._samplers = [
            InstanceSampler(instances, cfg.instance_order) for _ in range(self.num_envs)
        ]
        self._rngs = [
            np.random.default_rng(c) for c in np.random.SeedSequence().spawn(self.num_envs)
        ]
        self._obs = np.zeros((self.num_envs, self.single_observation_space.shape[0]), np.float32)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode in every sub-env (``options={"instances": [...]}`` picks them)."""
        if seed is not None:
            children = (
                [np.random.SeedSequence(s) for s in seed]
                if isinstance(seed, list)
                else np.random.SeedSequence(int(seed)).spawn(self.num_envs)
            )
            if len(children) != self.num_envs:
                raise ValueError(f"reset() needs {self.num_envs} seeds, got {len(children)}")
            self._rngs = [np.random.default_rng(c) for c in children]
            for sampler, rng in zip(self._samplers, self._rngs, strict=True):
                sampler.reseed(rng)
        options = reset_options(options, ("instances",))
        given = options.get("instances")
        if given is not None and len(given) != self.num_envs:
            raise ValueError(f"options['instances'] needs {self.num_envs} seeds, got {len(given)}")
        instances = [
            int(given[i]) if given is not None else self._next_instance(i)
            for i in range(self.num_envs)
        ]
        self._check_t(instances)
        self.engine.start(self._twinned(instances))
        self._retry_failed_starts(np.ones(self.num_envs, dtype=bool), given is None)
        self._started = True
        self._autoreset[:] = False
        self._obs = self._observations()
        weights = np.stack([t.last_weights.numpy() for t in self.engine.trackers])
        infos = self._infos(weights, np.zeros(self.num_envs, dtype=bool), None)
        return self._obs.copy(), infos

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply every sub-env's action for K trainer steps (see the module docstring)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        engine = self.engine
        acts = np.asarray(actions, dtype=np.float64)
        if acts.shape != (self.num_envs, self.action_dim):
            raise ValueError(
                f"actions must have shape ({self.num_envs}, {self.action_dim}), got {acts.shape}"
            )
        n = self.num_envs
        if self.paired_baseline:
            engine.hold(np.concatenate([acts, np.zeros_like(acts)]))  # ValueError: nothing held
        else:
            engine.hold(acts)  # ValueError before anything changes
        outcome = engine.advance()
        rewards = outcome.rewards[:n].copy()
        baseline: np.ndarray | None = None
        if self.paired_baseline:
            baseline = np.where(outcome.diverged[n:], 0.0, outcome.rewards[n:])
            rewards -= baseline
        terminated = outcome.terminated[:n].copy()
        weights, diverged = outcome.weights[:n].copy(), outcome.diverged[:n].copy()
        val = None if outcome.val_losses is None else outcome.val_losses[:n].copy()
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = self._autoreset.copy()
            rewards[restart] = 0.0
            terminated[restart] = False
            final: list[tuple[int, dict[str, Any]]] = []
        else:
            restart = terminated.copy()
            # An ended run's observation: its last state (IGBEnv's), or the one before a
            # divergence, which IGBEnv keeps.
            ended_obs = np.where(diverged[:, None], self._obs, self._observations())
            ended = self._slot_infos(self._infos(weights, diverged, val))
            final = [
                (int(i), {"final_obs": ended_obs[i].copy(), "final_info": ended[i]})
                for i in np.flatnonzero(terminated)
            ]
        if restart.any():
            slots = np.flatnonzero(restart).tolist()
            instances = [self._next_instance(i) for i in slots]
            self._check_t(instances)
            engine.restart(self._twinned(slots, True), self._twinned(instances))
        engine.absorb()
        if restart.any():
            self._retry_failed_starts(restart, True)
        # Every run's observation after this step; a diverged run keeps its last one.
        fresh = restart | ~diverged
        self._obs[fresh] = self._observations()[fresh]
        if restart.any():
            for i in np.flatnonzero(restart):
                weights[i] = engine.trackers[i].last_weights.numpy()
                diverged[i] = False
                if val is not None:
                    val[i] = engine.val_losses[i]
        infos = self._infos(weights, diverged, val)
        if baseline is not None:
            for slot in range(n):
                infos = self._add_info(infos, {"baseline_reward": float(baseline[slot])}, slot)
        for slot, extra in final:
            infos = self._add_info(infos, extra, slot)
        self._autoreset = (
            terminated.copy()
            if self.autoreset_mode == AutoresetMode.NEXT_STEP
            else np.zeros(self.num_envs, dtype=bool)
        )
        return self._obs.copy(), rewards, terminated, np.zeros(self.num_envs, dtype=bool), infos

    def render(self) -> None:
        """No rendering (``render_modes`` is empty)."""
        return None

    # -- helpers --------------------------------------------------------------------------------
    def _twinned(self, items: Sequence[int], slots: bool = False) -> list[int]:
        """Sub-env slots or instances with their twins' appended (unchanged without twins)."""
        items = [int(x) for x in items]
        if not self.paired_baseline:
            return items
        return items + ([x + self.num_envs for x in items] if slots else items)

    def _running(self) -> np.ndarray:
        """Sub-envs whose run (and twin's run) is going ``[N]``."""
        running = self.engine.running[: self.num_envs]
        return running & self.engine.running[self.num_envs :] if self.paired_baseline else running

    def _observations(self) -> np.ndarray:
        return self._clip(self.engine.observations()[: self.num_envs])

    def _next_instance(self, i: int) -> int:
        return self._samplers[i].next(self._rngs[i])

    def _check_t(self, instances: Sequence[int]) -> None:
        check_instance_set(self._cache, instances, self.n_tasks, "instances")

    def _retry_failed_starts(self, slots: np.ndarray, draw: bool) -> None:
        """Sub-envs whose run diverged inside its base window start on their next instance."""
        for _ in range(MAX_START_TRIES):
            failed = slots & ~self._running()
            if not failed.any() or not draw:
                break
            idx = np.flatnonzero(failed).tolist()
            instances = [self._next_instance(i) for i in idx]
            self.engine.restart(self._twinned(idx, True), self._twinned(instances))
            self.engine.absorb()
        failed = slots & ~self._running()
        if failed.any():
            raise RuntimeError(
                f"sub-env(s) {np.flatnonzero(failed).tolist()}: training diverged inside the base "
                f"window on {MAX_START_TRIES if draw else 1} instance(s) in a row; check the "
                "benchmark and training settings"
            )

    def _clip(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(obs, self._low, self._high).astype(np.float32)

    def _infos(
        self, weights: np.ndarray, diverged: np.ndarray, val_losses: np.ndarray | None
    ) -> dict[str, Any]:
        """The per-sub-env infos of ``IGBEnv``, batched as Gymnasium batches them."""
        engine = self.engine
        steps = engine.trainer.step_counts.numpy() if engine.trainer is not None else None
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            gaps = engine.trackers[i].gaps
            info: dict[str, Any] = {
                "instance": int(engine.instances[i]),
                "train_step": 0 if steps is None else int(steps[i]),
                "weights": np.asarray(weights[i], dtype=np.float64).copy(),
                "gaps": np.zeros(self.n_tasks) if gaps is None else gaps.numpy().copy(),
                "diverged": bool(diverged[i]),
            }
            if engine.reward.needs_validation:
                val = engine.val_losses[i] if val_losses is None else val_losses[i]
                info["val_losses"] = (
                    np.full(self.n_tasks, np.nan) if val is None else np.asarray(val).copy()
                )
            infos = self._add_info(infos, info, i)
        return infos

    def _slot_infos(self, infos: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The batched infos split back into one dict per sub-env."""
        keys = [k for k in infos if not k.startswith("_")]
        return [
            {k: infos[k][i] for k in keys if infos.get(f"_{k}", np.ones(self.num_envs))[i]}
            for i in range(self.num_envs)
        ]

    # -- state ----------------------------------------------------------------------------------
    def get_instance_state(self, i: int) -> dict[str, Any]:
        """Sub-env ``i``'s place in its instance set (sampler cursor and generator state)."""
        return {
            "sampler": self._samplers[i].state_dict(),
            "np_random": jsonable(self._rngs[i].bit_generator.state),
        }

    def set_instance_state(self, i: int, state: Mapping[str, Any]) -> None:
        """Restore ``get_instance_state(i)``: sub-env ``i``'s next instances continue from there."""
        self._samplers[i].load_state_dict(state["sampler"])
        self._rngs[i].bit_generator.state = dict(state["np_random"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the episodes in progress exactly (the engine included)."""
        return {
            "engine": self.engine.state_dict(),
            "instance_states": [self.get_instance_state(i) for i in range(self.num_envs)],
            "obs": self._obs.copy(),
            "autoreset": self._autoreset.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` into an env built with the same configuration and N."""
        self.engine.load_state_dict(state["engine"])
        for i, s in enumerate(state["instance_states"]):
            self.set_instance_state(i, s)
        self._obs = np.asarray(state["obs"], dtype=np.float32).copy()
        self._autoreset = np.asarray(state["autoreset"], dtype=bool).copy()
        self._started = True


__all__ = ["AUTORESET_MODES", "BatchedIGBEnv", "check_batchable"]
