"""IGBv2 as published: a SAC agent that learns the task weights *during* one MTL run.

Importing this module registers the weighting ``igbv2`` in
``mtl_backends.weightings.LOSS_WEIGHTINGS`` (``mtl_backends`` never imports ``agents``). The
import is light: Stable-Baselines3 and Gymnasium are imported only when an ``IGBv2`` is reset, so
``igb train`` and ``igb compare`` can ``import agents.online`` unconditionally before building a
weighting from a config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from igb_env.rewards import RewardInput, lr_factor, min_gap_decrease
from mtl_backends.gaps import GapTracker
from mtl_backends.policy.action_maps import make_action_map
from mtl_backends.rng import RngStream, numpy_state_from_dict, numpy_state_to_dict
from mtl_backends.weightings import LOSS_WEIGHTINGS
from mtl_backends.weightings.base import LossWeighting, StepContext

if TYPE_CHECKING:
    from stable_baselines3 import SAC

LR_SCALES: tuple[str, ...] = ("inverse", "none")
"""Reward scale choices: ``inverse`` (``α = min(lr_0 / lr, cap)``, the paper) or ``none``."""

SCHEDULES: tuple[str, ...] = ("paper", "proportional")
"""Phase schedules: ``paper`` (the published phases in epochs) or ``proportional`` (the same
phases as fractions of the run's budget, taking the published runs as ``paper_epochs`` long)."""

_BUFFER_ARRAYS: tuple[str, ...] = (
    "observations",
    "next_observations",
    "actions",
    "rewards",
    "dones",
    "timeouts",
)


def logits_to_action(logits: Tensor, scale: float) -> Tensor:
    """The action in ``[-1, 1]^T`` whose weights are ``T · softmax(logits)``, when one exists.

    Softmax ignores a common shift, so the logits are centred on their mid-range and divided by
    ``scale``; the result is exact when ``max(logits) − min(logits) ≤ 2 · scale`` and clipped to
    ``[-1, 1]`` otherwise.
    """
    z = logits.detach().to(torch.float64)
    centred = (z - 0.5 * (z.max() + z.min())) / scale
    return centred.clamp(-1.0, 1.0).to(torch.float32)


class IGBv2(LossWeighting):
    """Improvable Gap Balancing v2: a Soft Actor-Critic agent chooses the weights during the run.

    Paper: Dai, Fei, Lu, "Improvable Gap Balancing for Multi-Task Learning" (UAI 2023);
    https://arxiv.org/abs/2307.15429, §3.2.2; official code ``YanqiDai/IGB4MTL``
    (``ImprovableGapBalancing_v2``, ``SAC_Agent``).

    MDP: state = raw batch losses ``L(k)`` ``[T]``; action = weights ``w = T · softmax(u)``; reward
    ``r = α · min_t (L_t(k) − L_t(k+1)) / (L_base,t − L*_t)`` with ``α = min(lr_0 / lr_k, cap)``
    (the env's ``min_gap_decrease`` reward, ``igb_env.rewards``, on one step's batch losses);
    objective ``Σ_t w_t log(L_t − L*_t + eps)`` (transform ``log``). Weights are positive and sum
    to ``T``: the ``absolute`` action map with ``τ = action_scale``
    (``mtl_backends.policy.action_maps``).

    Schedule (``k`` = training step, ``E`` = steps per epoch, defaults = the paper's constants). At
    every step, in the published order:

    1. once the base losses exist, the transition ``(L(k−1), a(k−1), r, L(k))`` is added to the
       replay buffer (FIFO ring of ``buffer_size`` = 1e4);
    2. if ``k ≥ k_update`` and ``k % update_every == 0`` (50), SAC trains
       ``⌊gradient_steps · κ / 2⌋`` gradient steps (``gradient_steps`` = 50) on batches of
       ``⌊batch_size · κ / 2⌋`` (256) uniformly sampled transitions,
       ``κ = 1 + |buffer| / buffer_size``;
    3. the action: for ``k < k_random`` random logits ``z ~ N(0, I_T)`` from the trainer's seeded
       generator (RLW-style exploration, also during the base window, as in the published code);
       afterwards an action sampled (stochastically, as published) from the SAC policy at state
       ``L(k)``.

    The phase boundaries depend on ``schedule``:

    * ``"paper"`` (default): the published epochs, ``k_random = random_epochs · E`` (5 epochs)
      and ``k_update = update_start_epochs · E`` (3 epochs). The published runs last hundreds of
      epochs; in a 10–25-epoch run this spends a fifth or more of the budget on random weights.
    * ``"proportional"``: the published *proportions*, taking the published runs as
      ``paper_epochs`` (200) epochs long: ``k_random = round(random_epochs / paper_epochs · K)``
      and ``k_update = round(update_start_epochs / paper_epochs · K)`` with ``K`` the run's step
      budget (5/200 and 3/200 of it). Everything else (updates every 50 steps, their sizes, the
      buffer) is as published, in steps.

    A step whose weights are passed explicitly to ``MTLTrainer.apply`` is not seen by ``IGBv2``; the
    transition across it is skipped (the next transition starts from the next step it decides).

    The agent is an SB3 ``SAC`` (actor and twin critics with hidden layers (128, 128) and ReLU,
    log σ clamped to [−20, 2], Adam lr 3e-4 for actor, critics and the entropy temperature,
    γ = 0.99, Polyak τ = 0.005 every gradient step, temperature initialised at 0.2 and learned with
    target entropy −T). ``IGBv2`` drives its replay buffer and ``train()`` itself; ``learn()`` is
    never called. The model is built on a stub Gymnasium env with ``Box`` spaces of dimension ``T``
    that is never stepped.

    Stored action. SB3's actor squashes its Gaussian sample with ``tanh``, so an action is
    ``a ∈ [-1, 1]^T`` and the weights are ``w = T · softmax(action_scale · a)`` (ratio of two
    weights at most ``exp(2 · action_scale)``, 403 for the default 3). The buffer stores ``a`` (not
    ``w``).
    Random-phase logits ``z`` are stored as ``a = clip((z − mid(z)) / action_scale, −1, 1)`` with
    ``mid(z) = (max z + min z) / 2``, and the weights applied are the ones of that stored action:
    they equal the paper's ``T · softmax(z)`` exactly unless ``max z − min z > 2 · action_scale``
    (for T = 3 and scale 3 a few draws in 10⁴), so the buffer is always consistent with what ran.

    Differences from the published code (all unavoidable with SB3 or chosen for robustness):

    * Squashing: the published actor's Gaussian sample ``u`` is unbounded and mapped by
      ``T · softmax(u)`` (with a tanh log-probability correction that does not match it). Here
      ``u`` is squashed by ``tanh`` (with the matching correction) and scaled by
      ``action_scale`` before the softmax, which bounds the weight ratio.
    * The critics see the squashed action ``a`` rather than the weights ``w``.
    * SB3's update order: temperature, then critics, then actor, then targets (published: critics,
      actor, temperature, targets); SB3's critic loss is ``0.5 · (MSE₁ + MSE₂)`` (published: the
      sum; Adam makes the factor nearly irrelevant); the temperature loss uses the same sample as
      the actor loss, as in the published code.
    * ``α`` is capped at ``lr_scale_cap`` (10) because ``lr_0 / lr`` is infinite when a schedule
      decays to 0; ``lr_scale="none"`` gives ``α = 1`` (what the published QM9 trainer effectively
      ran). ``α`` is taken at the step whose action is rewarded. The published code sets ``α``
      once at the start of each epoch and applies it when the reward is computed, i.e. at the
      *next* step: the two agree except on the one transition per LR change that crosses it (the
      last step of an epoch to the first of the next), which here gets the old LR's ``α`` (half
      the published reward when the schedule halves the LR).
    * Gaps are normalised by ``L_base − L*`` (the published code divides by ``L_base``, i.e. L* = 0,
      our default for MSE/CE).
    * Randomness: random weights come from the trainer's seeded generator, the SAC's sampling and
      initialisation from torch and numpy RNG states this object owns (swapped in around every SAC
      call, saved in ``state_dict``), so a run is reproducible and resumes bit for bit; the
      published code draws from the global RNGs.
    * The published code builds its state and action buffers in float32 on the model's device; SB3
      stores float32 numpy arrays on the CPU (the agent runs on ``device``, default ``cpu``).

    Args:
        random_epochs: Epochs of random weights before the SAC policy acts (paper: 5).
        update_start_epochs: SAC updates start at step ``update_start_epochs · E`` (paper: 3).
        schedule: ``"paper"`` (default: the phases in epochs) or ``"proportional"`` (the phases
            as fractions ``random_epochs / paper_epochs`` and ``update_start_epochs / paper_epochs``
            of the run's step budget).
        paper_epochs: Length of the published runs the proportions refer to (default 200).
        update_every: Steps between SAC updates (paper: 50).
        gradient_steps: Gradient steps per update at ``κ = 2`` (paper: 50, i.e. ``update_every``).
        batch_size: SAC batch size at ``κ = 2`` (paper: 256).
        buffer_size: Replay buffer capacity (paper: 1e4).
        net_arch: Hidden widths of actor and critics (paper: (128, 128)).
        learning_rate: Adam learning rate of the agent (paper: 3e-4; 1e-4 with MGDA, PCGrad or
            Nash-MTL).
        gamma: Discount (paper: 0.99).
        tau: Polyak coefficient of the target critics (paper: 0.005).
        ent_coef_init: Initial entropy temperature (paper: 0.2), learned with target entropy −T.
        action_scale: ``w = T · softmax(action_scale · a)``.
        lr_scale: ``inverse`` (``α = min(lr_0 / lr, lr_scale_cap)``) or ``none`` (``α = 1``).
        lr_scale_cap: Cap of ``α``.
        device: Torch device of the agent.
    """

    label = "IGBv2"

    transform = "log"

    def __init__(
        self,
        random_epochs: int = 5,
        update_start_epochs: int = 3,
        update_every: int = 50,
        gradient_steps: int = 50,
        batch_size: int = 256,
        buffer_size: int = 10_000,
        net_arch: Sequence[int] = (128, 128),
        learning_rate: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
        ent_coef_init: float = 0.2,
        action_scale: float = 3.0,
        lr_scale: str = "inverse",
        lr_scale_cap: float = 10.0,
        device: str = "cpu",
        schedule: str = "paper",
        paper_epochs: int = 200,
    ) -> None:
        if random_epochs < 0 or update_start_epochs < 0:
            raise ValueError("random_epochs and update_start_epochs must be >= 0")
        if schedule not in SCHEDULES:
            raise ValueError(
                f"unknown IGBv2 schedule {schedule!r}; valid choices: {', '.join(SCHEDULES)}"
            )
        if paper_epochs < 1:
            raise ValueError(f"paper_epochs must be >= 1, got {paper_epochs}")
        for name, value in (
            ("update_every", update_every),
            ("gradient_steps", gradient_steps),
            ("batch_size", batch_size),
            ("buffer_size", buffer_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if lr_scale not in LR_SCALES:
            raise ValueError(
                f"unknown lr_scale {lr_scale!r}; valid choices: {', '.join(LR_SCALES)}"
            )
        if not action_scale > 0 or not lr_scale_cap >= 1:
            raise ValueError("action_scale must be > 0 and lr_scale_cap >= 1")
        self.random_epochs = int(random_epochs)
        self.update_start_epochs = int(update_start_epochs)
        self.schedule = schedule
        self.paper_epochs = int(paper_epochs)
        self.update_every = int(update_every)
        self.gradient_steps = int(gradient_steps)
        self.batch_size = int(batch_size)
        self.buffer_size = int(buffer_size)
        self.net_arch = tuple(int(w) for w in net_arch)
        self.learning_rate = float(learning_rate)
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.ent_coef_init = float(ent_coef_init)
        self.action_scale = float(action_scale)
        self.lr_scale = lr_scale
        self.lr_scale_cap = float(lr_scale_cap)
        self.device = device
        self.model: SAC | None = None
        self.action_map = make_action_map("absolute", self.action_scale)
        # The agent's private torch and numpy streams (replaced in ``reset``): SB3 samples actions
        # from the global torch RNG and replay indices from the global numpy RNG.
        self._rng = RngStream(0, numpy=True)

    # -- LossWeighting --------------------------------------------------------------------------
    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Build a fresh SAC agent and an empty buffer for ``n_tasks`` tasks.

        The agent's seed derives from ``generator.initial_seed()`` (the generator's stream itself is
        left to the random-phase weights).
        """
        from stable_baselines3 import SAC

        from agents.callbacks import null_logger

        generator = generator if generator is not None else torch.Generator()
        super().reset(n_tasks, generator)
        seed = int(np.random.SeedSequence([generator.initial_seed(), 0x16B2]).generate_state(1)[0])
        self._rng = RngStream(seed, numpy=True)
        env = _stub_env(n_tasks)
        with self._rng.active():
            model = SAC(
                "MlpPolicy",
                env,
                learning_rate=self.learning_rate,
                buffer_size=self.buffer_size,
                learning_starts=0,
                batch_size=self.batch_size,
                tau=self.tau,
                gamma=self.gamma,
                ent_coef=f"auto_{self.ent_coef_init}",
                target_entropy="auto",
                policy_kwargs={"net_arch": list(self.net_arch)},
                device=self.device,
                verbose=0,
            )
        model.set_logger(null_logger())
        self.model = model
        self._obs_device = model.device
        self.prev_state: Tensor | None = None
        self.prev_action: Tensor | None = None
        self.prev_lr_ratio = 1.0
        self.prev_step = -2
        self.update_calls = 0
        self.last_reward: float | None = None

    def _require_model(self) -> SAC:
        if self.model is None:
            raise RuntimeError("IGBv2 is not reset; call reset(n_tasks, generator) first")
        return self.model

    def reward_scale(self, lr_ratio: float) -> float:
        """``α`` for a step taken at ``lr / lr_0 = lr_ratio``."""
        return lr_factor(lr_ratio, self.lr_scale_cap) if self.lr_scale == "inverse" else 1.0

    def reward(self, previous: Tensor, current: Tensor, progress: GapTracker) -> float:
        """IGBv2's reward for the transition from the batch losses ``previous`` to ``current``.

        ``min_gap_decrease`` of the env on one step (the window is one batch), scaled by ``α`` of
        the step whose action is rewarded.
        """
        assert progress.base_losses is not None, "rewards exist only after the base window"
        inputs = RewardInput(
            losses_prev=previous.to(torch.float64).numpy(),
            losses_now=current.to(torch.float64).numpy(),
            base_losses=progress.base_losses.to(torch.float64).numpy(),
            lower_bounds=progress.lower_bounds.to(torch.float64).numpy(),
            lr_ratio=self.prev_lr_ratio,
        )
        return min_gap_decrease(
            inputs,
            scale=1.0,
            lr_scale=self.lr_scale == "inverse",
            lr_scale_cap=self.lr_scale_cap,
        )

    def update_size(self) -> tuple[int, int]:
        """``(gradient steps, batch size)`` of an update with the buffer as it is now."""
        model = self._require_model()
        kappa = 1.0 + model.replay_buffer.size() / self.buffer_size  # type: ignore[union-attr]
        return (
            max(1, math.floor(self.gradient_steps * kappa / 2)),
            max(1, math.floor(self.batch_size * kappa / 2)),
        )

    def _phase_start(self, epochs: int, steps_per_epoch: int, total_steps: int | None) -> int:
        if self.schedule == "paper":
            return epochs * steps_per_epoch
        if total_steps is None:
            raise ValueError(
                "IGBv2 schedule='proportional' needs the run's step budget (the gap tracker's "
                "total_steps); use schedule='paper' without one"
            )
        return round(epochs / self.paper_epochs * total_steps)

    def random_steps(self, steps_per_epoch: int, total_steps: int | None = None) -> int:
        """``k_random``: the steps of random weights (see the class docstring)."""
        return self._phase_start(self.random_epochs, steps_per_epoch, total_steps)

    def update_start(self, steps_per_epoch: int, total_steps: int | None = None) -> int:
        """``k_update``: the first step at which SAC may train."""
        return self._phase_start(self.update_start_epochs, steps_per_epoch, total_steps)

    def is_update_step(
        self, step: int, steps_per_epoch: int, total_steps: int | None = None
    ) -> bool:
        """Whether SAC trains at ``step`` (before acting)."""
        return (
            step >= self.update_start(steps_per_epoch, total_steps)
            and step % self.update_every == 0
        )

    def __call__(self, context: StepContext) -> Tensor:
        """Add the last transition, train SAC on schedule, then choose this batch's weights."""
        model = self._require_model()
        buffer = model.replay_buffer
        assert buffer is not None
        losses = context.losses.detach().to("cpu", torch.float32).reshape(-1)
        step = context.step
        progress = context.progress
        base = progress.base_losses
        if (
            base is not None
            and self.prev_state is not None
            and self.prev_action is not None
            and step == self.prev_step + 1
        ):
            reward = self.reward(self.prev_state, losses, progress)
            self.last_reward = reward
            buffer.add(
                self.prev_state.numpy()[None],
                losses.numpy()[None],
                self.prev_action.numpy()[None],
                np.array([reward], dtype=np.float32),
                np.array([False]),
                [{}],
            )
        total = progress.total_steps
        if self.is_update_step(step, context.steps_per_epoch, total) and buffer.size() > 0:
            gradient_steps, batch_size = self.update_size()
            with self._rng.active():
                model.train(gradient_steps=gradient_steps, batch_size=batch_size)
            self.update_calls += 1
        if step < self.random_steps(context.steps_per_epoch, total):
            logits = torch.randn(self.n_tasks, generator=self.generator)
            action = logits_to_action(logits, self.action_scale)
        else:
            obs = losses.to(self._obs_device)[None]
            # The actor has no dropout or batch norm, so its train/eval mode does not matter.
            with self._rng.active(with_numpy=False), torch.no_grad():
                action = model.actor(obs, deterministic=False)[0].detach().to("cpu", torch.float32)
        self.prev_state, self.prev_action = losses.clone(), action.clone()
        self.prev_lr_ratio, self.prev_step = float(context.lr_ratio), step
        return self.action_map.weights(self.action_map.prepare(action.to(torch.float64)), progress)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Agent networks and optimisers, temperature, buffer, pending transition, counters, RNGs.

        Tensors and primitives only (loadable with ``torch.load(weights_only=True)``).
        """
        model = self._require_model()
        buffer = model.replay_buffer
        assert buffer is not None and model.log_ent_coef is not None
        assert model.ent_coef_optimizer is not None
        size = buffer.size()
        arrays = {
            name: torch.from_numpy(np.array(getattr(buffer, name)[:size], copy=True))
            for name in _BUFFER_ARRAYS
        }
        return {
            "policy": {k: v.detach().clone() for k, v in model.policy.state_dict().items()},
            "actor_optimizer": model.actor.optimizer.state_dict(),
            "critic_optimizer": model.critic.optimizer.state_dict(),
            "log_ent_coef": model.log_ent_coef.detach().clone(),
            "ent_coef_optimizer": model.ent_coef_optimizer.state_dict(),
            "n_updates": int(model._n_updates),
            "buffer": {**arrays, "pos": int(buffer.pos), "full": bool(buffer.full)},
            "prev_state": None if self.prev_state is None else self.prev_state.clone(),
            "prev_action": None if self.prev_action is None else self.prev_action.clone(),
            "prev_lr_ratio": float(self.prev_lr_ratio),
            "prev_step": int(self.prev_step),
            "update_calls": int(self.update_calls),
            "last_reward": self.last_reward,
            "torch_rng": self._rng.torch_state.clone(),
            "numpy_rng": numpy_state_to_dict(self._rng.numpy_state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (on an ``IGBv2`` reset for the same ``T``)."""
        model = self._require_model()
        buffer = model.replay_buffer
        assert buffer is not None and model.log_ent_coef is not None
        assert model.ent_coef_optimizer is not None
        model.policy.load_state_dict(state["policy"])
        model.actor.optimizer.load_state_dict(state["actor_optimizer"])
        model.critic.optimizer.load_state_dict(state["critic_optimizer"])
        with torch.no_grad():
            model.log_ent_coef.copy_(state["log_ent_coef"])
        model.ent_coef_optimizer.load_state_dict(state["ent_coef_optimizer"])
        model._n_updates = int(state["n_updates"])
        saved = state["buffer"]
        for name in _BUFFER_ARRAYS:
            target = getattr(buffer, name)
            values = saved[name].numpy()
            target[...] = 0
            target[: values.shape[0]] = values
        buffer.pos, buffer.full = int(saved["pos"]), bool(saved["full"])
        self.prev_state = None if state["prev_state"] is None else state["prev_state"].clone()
        self.prev_action = None if state["prev_action"] is None else state["prev_action"].clone()
        self.prev_lr_ratio = float(state["prev_lr_ratio"])
        self.prev_step = int(state["prev_step"])
        self.update_calls = int(state["update_calls"])
        self.last_reward = state["last_reward"]
        self._rng.torch_state = state["torch_rng"].clone()
        self._rng.numpy_state = numpy_state_from_dict(state["numpy_rng"])

    def __repr__(self) -> str:
        return (
            f"IGBv2(random_epochs={self.random_epochs}, "
            f"update_start_epochs={self.update_start_epochs}, update_every={self.update_every}, "
            f"buffer_size={self.buffer_size}, action_scale={self.action_scale}, "
            f"schedule={self.schedule!r})"
        )


def _stub_env(n_tasks: int) -> Any:
    """A never-stepped Gymnasium env that only carries IGBv2's spaces (losses in, actions out)."""
    import gymnasium as gym

    class StubEnv(gym.Env[np.ndarray, np.ndarray]):
        def __init__(self) -> None:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n_tasks,), np.float32)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (n_tasks,), np.float32)

        def reset(
            self, *, seed: int | None = None, options: dict[str, Any] | None = None
        ) -> tuple[np.ndarray, dict[str, Any]]:
            return np.zeros(n_tasks, dtype=np.float32), {}

        def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
            return np.zeros(n_tasks, dtype=np.float32), 0.0, True, False, {}

    return StubEnv()


LOSS_WEIGHTINGS["igbv2"] = IGBv2

__all__ = ["LR_SCALES", "SCHEDULES", "IGBv2", "logits_to_action"]
