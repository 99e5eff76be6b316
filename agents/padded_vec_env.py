"""``PaddedVecEnv``: one SB3 ``VecEnv`` over env groups whose runs have different T.

The set policy (``policy: set``) trains on several env groups at once (e.g. one per T); this joins
their sub-envs in the padded layout of ``agents.set_policy`` (observations and actions padded to
the largest T, with the mask the policy reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import (
    VecEnv,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from agents.set_policy import PaddedLayout


class PaddedVecEnv(VecEnv):
    """One SB3 ``VecEnv`` over groups of sub-envs whose runs have different T (``policy: set``).

    Each group is a ``VecEnv`` of one env configuration (a ``BatchedVecEnv``, or copies of
    ``IGBEnv``); their observations are padded to ``layout`` (``agents.set_policy.PaddedLayout``:
    per-task features up to ``max_tasks``, globals, task mask) and the padded actions cut back to
    each group's ``T + A`` entries. Sub-env indices run group after group; every info carries the
    sub-env's ``n_tasks``, and ``terminal_observation`` is padded like the observations.

    Args:
        groups: The groups' vectorised envs.
        n_tasks: T of each group.
        layout: The padded layout (``max_tasks`` at least every group's T).
        observation_space: The padded observation space (``layout.observation_space(spec)``).
    """

    def __init__(
        self,
        groups: Sequence[VecEnv],
        n_tasks: Sequence[int],
        layout: PaddedLayout,
        observation_space: spaces.Box,
    ) -> None:
        if not groups or len(groups) != len(n_tasks):
            raise ValueError("PaddedVecEnv needs one T per group and at least one group")
        self.groups = list(groups)
        self.n_tasks = [int(t) for t in n_tasks]
        self.layout = layout
        for venv, t in zip(self.groups, self.n_tasks, strict=True):
            expected = t * layout.task_features + layout.global_features
            if venv.observation_space.shape != (expected,):
                raise ValueError(
                    f"a group of T={t} must observe {expected} features for the layout, got "
                    f"{venv.observation_space.shape}"
                )
        self._offsets = np.cumsum([0] + [g.num_envs for g in self.groups])
        self.render_mode = None
        if observation_space.shape != (layout.obs_dim,):
            raise ValueError(
                f"the observation space must have shape ({layout.obs_dim},) for the layout, got "
                f"{observation_space.shape}"
            )
        super().__init__(int(self._offsets[-1]), observation_space, layout.action_space())

    def _locate(self, index: int) -> tuple[int, int]:
        group = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return group, index - int(self._offsets[group])

    def _slices(self) -> list[slice]:
        return [
            slice(int(a), int(b))
            for a, b in zip(self._offsets[:-1], self._offsets[1:], strict=True)
        ]

    def reset(self) -> np.ndarray:
        """Reset every group (with the seeds of ``seed()`` when set since the last reset)."""
        out = []
        infos: list[dict[str, Any]] = []
        for venv, part, t in zip(self.groups, self._slices(), self.n_tasks, strict=True):
            seeds = self._seeds[part]
            if any(s is not None for s in seeds):
                venv._seeds = list(seeds)
            out.append(self.layout.pad(np.asarray(venv.reset()), t))
            infos += [{**info, "n_tasks": t} for info in venv.reset_infos]
        self.reset_infos = infos
        self._reset_seeds()
        return np.concatenate(out)

    def step_async(self, actions: np.ndarray) -> None:
        """Start every group's step with its share of the actions (cut to its T)."""
        actions = np.asarray(actions)
        for venv, part, t in zip(self.groups, self._slices(), self.n_tasks, strict=True):
            venv.step_async(self.layout.unpad_action(actions[part], t))

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for every group; pad the observations (and terminal observations)."""
        obs, rewards, dones, infos = [], [], [], []
        for venv, t in zip(self.groups, self.n_tasks, strict=True):
            o, r, d, i = venv.step_wait()
            obs.append(self.layout.pad(np.asarray(o), t))
            rewards.append(np.asarray(r, dtype=np.float32))
            dones.append(np.asarray(d, dtype=bool))
            for info in i:
                info = dict(info)
                info["n_tasks"] = t
                if "terminal_observation" in info:
                    info["terminal_observation"] = self.layout.pad(
                        np.asarray(info["terminal_observation"])[None], t
                    )[0]
                infos.append(info)
        return np.concatenate(obs), np.concatenate(rewards), np.concatenate(dones), infos

    def close(self) -> None:
        """Close every group."""
        for venv in self.groups:
            venv.close()

    def _dispatch(self, indices: VecEnvIndices) -> list[tuple[int, int]]:
        return [self._locate(i) for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each indexed sub-env."""
        return [
            self.groups[g].get_attr(attr_name, indices=[i])[0] for g, i in self._dispatch(indices)
        ]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of each indexed sub-env (where its group allows it)."""
        for g, i in self._dispatch(indices):
            self.groups[g].set_attr(attr_name, value, indices=[i])

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a method of each indexed sub-env."""
        return [
            self.groups[g].env_method(method_name, *method_args, indices=[i], **kwargs)[0]
            for g, i in self._dispatch(indices)
        ]

    def env_is_wrapped(
        self,
        wrapper_class: type[gym.Wrapper],
        indices: VecEnvIndices = None,
    ) -> list[bool]:
        """Whether each indexed sub-env is wrapped with ``wrapper_class``."""
        return [
            self.groups[g].env_is_wrapped(wrapper_class, indices=[i])[0]
            for g, i in self._dispatch(indices)
        ]


__all__ = ["PaddedVecEnv"]
