"""``PolicyWeighting``: an exported policy as a loss weighting, in ``MTLTrainer`` or your own loop.

The policy folder format, its network and runtime live in ``mtl_backends.policy``; this module only
decides when the policy acts and checks that it fits the run.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mtl_backends.balancers import GRADIENT_BALANCERS
from mtl_backends.features import FeatureSpec
from mtl_backends.gaps import GapTracker, is_decision_step
from mtl_backends.policy.action_maps import HeldAction
from mtl_backends.policy.files import (
    DEFAULT_SHIPPED,
    load_policy,
    resolve_policy,
    shipped_policy,
)
from mtl_backends.registry import ConfigError
from mtl_backends.weightings.base import LossWeighting, StepContext

if TYPE_CHECKING:
    from mtl_backends.trainer import MTLTrainer


class PolicyMismatchError(ConfigError):
    """A policy does not fit the run it is asked to weight (T, features, transform or K)."""


class PolicyWeighting(LossWeighting):
    """Runs an exported policy as a loss weighting, in ``MTLTrainer`` or a user's own loop.

    It decides where the env decides: at the first step after the base window, then every
    ``K = steps_per_action`` steps, it maps the current features (``GapTracker.features()``) to an
    action, which it holds for K steps; every step maps the held action through the action map with
    the current gaps and losses (``residual``, ``interp``) or alone (``absolute``). Before the base
    losses exist the weights are 1, and until the first decision the held action is 0. Transform
    ``log``; weights sum to T. An env episode replayed through it gives the same weights, bit for
    bit. A policy with a set network (``n_tasks`` ``None``) runs at any T; an MLP policy only at the
    T it was trained with.

    In ``MTLTrainer`` the run's gap tracker must use the policy's feature settings
    (``feature_spec``; the trainer takes it from the weighting when ``features`` is not given).
    ``check_run(trainer)`` refuses a mismatched run and warns about a different balancer. In a
    user's loop, ``update(losses, lr=...)`` feeds its own ``GapTracker``.

    Without a ``path`` it loads a policy shipped inside the package: ``shipped`` names it
    (``mtl_backends.policy.files.shipped_policies()``), by default ``generalist``, the
    task-count-agnostic policy (``policies/README.md``), so ``make_weighting("policy")`` and
    ``{name: policy}`` in a config work out of the box.

    Args:
        path: Policy folder, or the name of a shipped policy (``None``: the shipped policy
            ``shipped``).
        shipped: Name of a shipped policy (only without ``path``).
        base_window: Base window of ``update``'s tracker (default: the sidecar's).
        total_steps: Step budget of ``update``'s tracker (default: the sidecar's).
        lower_bounds: Loss lower bounds ``L*`` of ``update``'s tracker (default zeros).
    """

    label = "learned policy"

    transform = "log"

    def __init__(
        self,
        path: str | Path | None = None,
        shipped: str | None = None,
        base_window: Sequence[int] | None = None,
        total_steps: int | None = None,
        lower_bounds: Sequence[float] | Tensor | None = None,
    ) -> None:
        if path is not None and shipped is not None:
            raise ConfigError("give a policy path or the name of a shipped policy, not both")
        self.path = (
            resolve_policy(path) if path is not None else shipped_policy(shipped or DEFAULT_SHIPPED)
        )
        self.policy = load_policy(self.path)
        # The run's T (a set policy learns it at reset() or at the first update()).
        self._run_tasks: int | None = self.policy.n_tasks
        self.feature_spec = self.policy.feature_spec
        self.steps_per_action = self.policy.steps_per_action
        self.action_mode = self.policy.action_mode
        self.tau = self.policy.tau
        bw = base_window if base_window is not None else self.policy.sidecar["base_window"]
        self._base_window = None if bw is None else (int(bw[0]), int(bw[1]))
        self._total_steps = int(
            total_steps if total_steps is not None else self.policy.sidecar["total_steps"]
        )
        self._lower_bounds = (
            None if lower_bounds is None else torch.as_tensor(lower_bounds, dtype=torch.float64)
        )
        self.generator: torch.Generator | None = None
        self._held = HeldAction(self.action_mode, self.tau)
        self._checked: int | None = None
        self.tracker: GapTracker | None = None
        self._step = 0

    @classmethod
    def data_path(cls, kwargs: Mapping[str, Any]) -> str | None:
        """The policy folder: ``path`` (a folder or a shipped policy's name), or ``shipped``'s."""
        if kwargs.get("path") is not None:
            return str(resolve_policy(str(kwargs["path"])))
        shipped = kwargs.get("shipped") or DEFAULT_SHIPPED
        try:
            return str(shipped_policy(str(shipped)))
        except ValueError:
            return None  # reported when the weighting is built

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> PolicyWeighting:
        """Load the policy folder ``path``, or the shipped policy of that name (class arguments).

        ``PolicyWeighting.load("synthetic-ppo-residual")`` works in any folder, with a wheel as in a
        checkout; a value with a path separator is always a path.
        """
        return cls(path, **kwargs)

    @property
    def balancer(self) -> str:
        """Registry name of the balancer the policy was trained with."""
        return str(self.policy.sidecar["balancer"])

    # -- LossWeighting --------------------------------------------------------------------------
    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Start a new run; refuses a run whose number of tasks differs from the policy's."""
        if self.policy.n_tasks is not None and n_tasks != self.policy.n_tasks:
            raise PolicyMismatchError(
                f"policy {str(self.path)!r} does not fit this run: n_tasks: the policy was trained "
                f"with T={self.policy.n_tasks}, the run has T={n_tasks}"
            )
        self.generator = generator
        self.n_tasks = self._run_tasks = int(n_tasks)
        self._held.hold(None, n_tasks)
        self._checked = None
        self.tracker = None
        self._step = 0

    def __call__(self, context: StepContext) -> Tensor:
        """Weights of the current batch (deciding a new action at decision points)."""
        progress = context.progress
        if self._checked != id(progress):
            problems = self._mismatches(progress.n_tasks, progress.spec, self.transform, None)
            if problems:
                raise self._error(problems)
            self._checked = id(progress)
        return self._weights(progress, context.step)

    def _weights(self, progress: GapTracker, step: int) -> Tensor:
        if progress.has_base and progress.gaps is not None:
            first = progress.base_window[1]
            if step >= first and (
                self._held.action is None or is_decision_step(step, first, self.steps_per_action)
            ):
                self._held.hold(self.policy.act(progress.features()), progress.n_tasks)
        return self._held.weights(progress)

    def state_dict(self) -> dict[str, Any]:
        """The held action and ``update``'s tracker and step."""
        return {
            "action": None if self._held.action is None else self._held.action.clone(),
            "n_tasks": self._run_tasks,
            "step": self._step,
            "tracker": None if self.tracker is None else self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        run_tasks = state.get("n_tasks", self.policy.n_tasks)
        self._run_tasks = None if run_tasks is None else int(run_tasks)
        if state["action"] is not None and self._run_tasks is None:
            raise ValueError("a held action needs the run's n_tasks in the state")
        self._held.hold(state["action"], self._run_tasks or 0)
        self._step = int(state["step"])
        if state["tracker"] is not None:
            self._ensure_tracker(self._run_tasks or 0).load_state_dict(state["tracker"])

    # -- checks ---------------------------------------------------------------------------------
    def _mismatches(
        self,
        n_tasks: int | None,
        features: FeatureSpec | None,
        transform: str | None,
        steps_per_action: int | None,
    ) -> list[str]:
        problems = []
        side = self.policy.sidecar
        if (
            n_tasks is not None
            and self.policy.n_tasks is not None
            and n_tasks != self.policy.n_tasks
        ):
            problems.append(
                f"n_tasks: the policy was trained with T={self.policy.n_tasks}, "
                f"the run has T={n_tasks}"
            )
        if transform is not None and transform != side["transform"]:
            problems.append(
                f"transform: the policy needs {side['transform']!r}, the run uses {transform!r}"
            )
        if features is not None:
            mine = self.feature_spec
            for name in ("history", "ema", "table"):
                if getattr(features, name) != getattr(mine, name):
                    problems.append(
                        f"features: {name} is {getattr(mine, name)!r} in the policy but "
                        f"{getattr(features, name)!r} in the run's gap tracker"
                    )
            if features.stride != self.steps_per_action:
                problems.append(
                    f"steps_per_action: the policy holds each action for K={self.steps_per_action} "
                    f"steps but the run's gap tracker snapshots every {features.stride} steps "
                    f"(FeatureSpec.stride must equal K)"
                )
        if steps_per_action is not None and steps_per_action != self.steps_per_action:
            problems.append(
                f"steps_per_action: the policy was trained with K={self.steps_per_action}, "
                f"the run asks for K={steps_per_action}"
            )
        return problems

    def _error(self, problems: list[str]) -> PolicyMismatchError:
        return PolicyMismatchError(
            f"policy {str(self.path)!r} does not fit this run: " + "; ".join(problems)
        )

    def check_run(
        self,
        trainer: MTLTrainer | None = None,
        *,
        n_tasks: int | None = None,
        features: FeatureSpec | None = None,
        transform: str | None = None,
        steps_per_action: int | None = None,
        balancer: str | None = None,
    ) -> None:
        """Refuse a run this policy does not fit; warn when its balancer differs from training.

        Args:
            trainer: A trainer to read everything from (its T, gap-tracker features, weighting
                transform and balancer).
            n_tasks: Number of tasks of the run.
            features: Feature settings of the run's gap tracker.
            transform: Loss transform of the run.
            steps_per_action: Steps each action is held.
            balancer: Registry name of the run's balancer.

        Raises:
            PolicyMismatchError: T, features, transform or K differ (all mismatches are named).
        """
        if trainer is not None:
            n_tasks = trainer.n_tasks if n_tasks is None else n_tasks
            features = trainer.progress.spec if features is None else features
            transform = trainer.weighting.transform if transform is None else transform
            if balancer is None:
                names = [k for k, v in GRADIENT_BALANCERS.items() if type(trainer.balancer) is v]
                balancer = names[0] if names else type(trainer.balancer).__name__
        problems = self._mismatches(n_tasks, features, transform, steps_per_action)
        if problems:
            raise self._error(problems)
        if balancer is not None and balancer != self.balancer:
            warnings.warn(
                f"policy {str(self.path)!r} was trained with the {self.balancer!r} balancer but "
                f"the run uses {balancer!r}; its weights may not transfer",
                UserWarning,
                stacklevel=2,
            )

    # -- users' own loops -----------------------------------------------------------------------
    def _ensure_tracker(self, n_tasks: int) -> GapTracker:
        if self.tracker is None:
            if self._base_window is None:
                raise ValueError(
                    "the policy's base window is the second epoch of its training runs; pass "
                    "base_window=(start, end) to PolicyWeighting for update()"
                )
            self._run_tasks = n_tasks
            self.tracker = GapTracker(
                n_tasks,
                base_window=self._base_window,
                lower_bounds=self._lower_bounds,
                total_steps=self._total_steps,
                spec=self.feature_spec,
            )
        return self.tracker

    def update(self, losses: Tensor | Sequence[float], lr: float | None = None) -> Tensor:
        """Absorb this step's raw task losses and return its weights (for a user's training loop).

        Call once per optimizer step, before the backward pass, and minimise
        ``(weights * log(losses - L* + eps)).sum()``.

        Args:
            losses: Raw (untransformed) task losses ``[T]`` of the current batch.
            lr: Current learning rate (for the LR-ratio feature; ``None``: constant).

        Returns:
            The weights ``[T]`` (float32, detached, on the device of ``losses``; sum ``T``).
        """
        given = torch.as_tensor(losses).detach()
        raw = given.to("cpu", torch.float64).reshape(-1)
        expected = self.tracker.n_tasks if self.tracker is not None else self.policy.n_tasks
        if expected is not None and raw.shape != (expected,):
            raise PolicyMismatchError(
                f"policy {str(self.path)!r}: n_tasks: the run has T={expected}, "
                f"update() got {raw.numel()} losses"
            )
        tracker = self._ensure_tracker(raw.numel())
        tracker.update(raw, self._step, 1.0 if lr is None else float(lr))
        weights = self._weights(tracker, self._step)
        tracker.record_weights(weights)
        self._step += 1
        return weights.to(given.device)

    def __repr__(self) -> str:
        return (
            f"PolicyWeighting(path={str(self.path)!r}, mode={self.action_mode!r}, "
            f"K={self.steps_per_action})"
        )


__all__ = ["PolicyMismatchError", "PolicyWeighting"]
