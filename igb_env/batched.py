"""The batched engine: N episodes of one env configuration stepped together (no gymnasium).

``BatchedEpisodes`` is ``igb_env.episode.Episode`` for N instances at once: one
``mtl_backends.stacked.StackedTrainer`` trains the N runs in lockstep, while every slot keeps its
own ``GapTracker``, ``HeldAction`` and reward inputs, the same objects the single env uses, so
features, action maps and rewards have one implementation. Only the training arithmetic is batched;
it equals the per-instance trainer to float rounding (``docs/architecture.md``, "The batched env").

All slots share the configuration (T, base window, K, reward); instances differ in data,
initialisation and batch order (and, with ``variation``, in their sampled task scales, noise floors,
label fractions and task kinds; with ``budgets``, in their step budgets). Slots start together
(``start``) and can be restarted alone (``restart``: a slot whose run diverged, or any slot the
caller wants to renew); a restarting slot runs its base window while the others wait.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from igb_env.config import EnvConfig
from igb_env.instances import BenchmarkCache
from igb_env.rewards import RewardInput, get_reward
from mtl_backends.balancers import GradientBalancer, make_balancer
from mtl_backends.benchmarks import Benchmark
from mtl_backends.gaps import GapTracker, second_epoch_window
from mtl_backends.policy.action_maps import HeldAction, StackedGaps
from mtl_backends.stacked import AdamImpl, StackedTrainer


@dataclass
class BatchedOutcome:
    """What one batched env step produced, per slot.

    Attributes:
        rewards: Reward of every slot ``[N]`` (the divergence penalty where ``diverged``).
        terminated: Budget spent or training diverged ``[N]``.
        diverged: A loss (or the reward) became non-finite in this step ``[N]``.
        weights: Mean weights applied over the step's trainer steps ``[N, T]``.
        val_losses: Validation losses after the step ``[N, T]`` (``None`` unless the reward uses
            them).
    """

    rewards: np.ndarray
    terminated: np.ndarray
    diverged: np.ndarray
    weights: np.ndarray
    val_losses: np.ndarray | None


class BatchedEpisodes:
    """N MTL runs of one env configuration, driven K trainer steps at a time.

    Args:
        config: The env configuration (``benchmark``, ``train``, K, action map, reward, ...).
        n: Number of slots ``N``.
        benchmarks: Builds each instance's benchmark (default: a new ``BenchmarkCache``).
        adam: Optimizer implementation of the stacked trainer (``mtl_backends.stacked.adam``).
    """

    def __init__(
        self,
        config: EnvConfig,
        n: int,
        benchmarks: BenchmarkCache | None = None,
        adam: AdamImpl = "fused",
    ) -> None:
        if n < 1:
            raise ValueError(f"a batched env needs at least one slot, got {n}")
        self.config = config
        self.n = int(n)
        self.adam: AdamImpl = adam
        self.benchmarks = benchmarks or BenchmarkCache(
            config.benchmark, size=1, variation=config.variation
        )
        self.reward = get_reward(config.reward.name)
        self.reward_kwargs = dict(config.reward.kwargs)
        self.trainer: StackedTrainer | None = None
        self.instances = [-1] * self.n
        self.trackers: list[GapTracker] = []
        self.held = [HeldAction(config.action_mode, config.tau) for _ in range(self.n)]
        self.running = np.zeros(self.n, dtype=bool)
        self.window_losses: list[np.ndarray | None] = [None] * self.n
        self.val_losses: list[np.ndarray | None] = [None] * self.n
        self.val_metrics: list[np.ndarray | None] = [None] * self.n
        self._signs: list[np.ndarray] = [np.zeros(0)] * self.n
        self._lower: list[np.ndarray] = [np.zeros(0)] * self.n
        self._val_rows = 0
        self._pending = np.zeros(self.n, dtype=bool)

    # -- starting runs --------------------------------------------------------------------------
    def start(self, instances: Sequence[int]) -> None:
        """Start every slot on ``instances`` (one per slot): base windows, then the first batch."""
        if len(instances) != self.n:
            raise ValueError(f"start() needs {self.n} instances, got {len(instances)}")
        benches = [self._benchmark(int(i)) for i in instances]
        if self.trainer is None:
            self.trainer = StackedTrainer(
                benches,
                [int(i) for i in instances],
                [self.config.train_for(int(i)) for i in instances],
                "log",
                adam=self.adam,
                balancer=self._balancer(),
            )
            self.trackers = [
                self._tracker(b, int(i)) for b, i in zip(benches, instances, strict=True)
            ]
            self._val_rows = min(self.config.val_batch_size, len(benches[0].split("val")))
            for i, (bench, inst) in enumerate(zip(benches, instances, strict=True)):
                self._install(i, bench, int(inst))
            self._base_windows(np.ones(self.n, dtype=bool))
        else:
            # A reset of every slot (e.g. a second env reset) drops the batch drawn for the
            # decisions of the runs it ends.
            self.trainer.discard()
            self._pending[:] = False
            self.restart(range(self.n), instances, benches)
        self.absorb()

    def restart(
        self,
        slots: Sequence[int],
        instances: Sequence[int],
        benches: Sequence[Benchmark] | None = None,
    ) -> None:
        """Start new runs in ``slots`` on ``instances`` and train their base windows.

        The other slots wait, unchanged. Call between ``advance`` and ``absorb`` (no batch may be
        pending); ``absorb`` then draws the restarted slots' first decision batch with the others'.

        Raises:
            RuntimeError: ``start`` was never called, or a batch is pending.
        """
        trainer = self._require()
        if self._pending.any():
            raise RuntimeError("restart() needs no pending batch: call it before absorb()")
        slots = [int(s) for s in slots]
        if benches is None:
            benches = [self._benchmark(int(i)) for i in instances]
        mask = np.zeros(self.n, dtype=bool)
        for i, bench, inst in zip(slots, benches, instances, strict=True):
            trainer.reset_slot(i, bench, int(inst), self.config.train_for(int(inst)))
            self.trackers[i] = self._tracker(bench, int(inst))
            self._install(i, bench, int(inst))
            mask[i] = True
        self._base_windows(mask)

    def _balancer(self) -> GradientBalancer:
        """The env's gradient balancer; the stacked trainer gives every slot its own copy."""
        return make_balancer(self.config.balancer.name, **self.config.balancer.kwargs)

    def _benchmark(self, instance: int) -> Benchmark:
        return self.benchmarks.get(instance)

    def _tracker(self, bench: Benchmark, instance: int) -> GapTracker:
        train = self.config.train_for(instance)
        steps_per_epoch = len(bench.split("train")) // train.batch_size
        return GapTracker(
            bench.n_tasks,
            base_window=train.base_window or second_epoch_window(steps_per_epoch),
            lower_bounds=bench.lower_bounds,
            total_steps=train.steps,
            spec=self.config.feature_spec,
            lr0=train.lr,
        )

    def _install(self, i: int, bench: Benchmark, instance: int) -> None:
        self.instances[i] = instance
        self.held[i].hold(None, bench.n_tasks)
        self._lower[i] = bench.lower_bounds.detach().to(torch.float64).numpy()
        self._signs[i] = np.array([1.0 if m.higher_is_better else -1.0 for m in bench.metric_specs])
        self.window_losses[i] = None
        self.val_losses[i] = None
        self.val_metrics[i] = None
        self.running[i] = True

    def _base_windows(self, slots: np.ndarray) -> None:
        """Train ``slots`` through their base windows with unit weights (the others wait)."""
        trainer = self._require()
        base_end = np.array([t.base_window[1] for t in self.trackers])
        while True:
            steps = trainer.step_counts.numpy()
            active = slots & (steps < base_end) & ~trainer.diverged.numpy()
            if not active.any():
                break
            self._step(active, first=False)
        val, metrics = self._validation()
        for i in np.flatnonzero(slots):
            self.val_losses[i] = None if val is None else val[i]
            self.val_metrics[i] = None if metrics is None else metrics[i]
            if bool(trainer.diverged[i]):
                self.running[i] = False

    def absorb(self) -> None:
        """Draw and absorb the next batch of every running slot (what its next decision sees).

        A slot whose base window just ended takes its base losses as the previous window of its
        first reward.
        """
        trainer = self._require()
        want = self.running & ~trainer.done.numpy() & ~trainer.diverged.numpy() & ~self._pending
        if want.any():
            self._forward(want)
        for i in np.flatnonzero(want):
            tracker = self.trackers[i]
            if self.window_losses[i] is None and tracker.base_losses is not None:
                self.window_losses[i] = tracker.base_losses.numpy().copy()
            if bool(trainer.diverged[i]):
                self.running[i] = False

    # -- stepping -------------------------------------------------------------------------------
    def _require(self) -> StackedTrainer:
        if self.trainer is None:
            raise RuntimeError("call start() first")
        return self.trainer

    def _forward(self, slots: np.ndarray) -> None:
        """Draw and absorb the next batch of ``slots`` (the trackers see it before any decision)."""
        trainer = self._require()
        steps, lrs = trainer.step_counts.numpy(), trainer.lrs.numpy()
        losses = trainer.forward(slots)
        dead = trainer.diverged.numpy()
        for i in np.flatnonzero(slots & ~dead):
            self.trackers[i].update(losses[i], int(steps[i]), float(lrs[i]))
        self._pending = slots.copy()

    def _step(self, slots: np.ndarray, first: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One trainer step of ``slots``: ``forward`` (unless ``first``), then the held weights.

        With ``first`` the slots' batch was absorbed already (the decision's batch).

        Returns:
            The losses and weights ``[N, T]`` and the slots that stepped ``[N]`` (those whose
            loss stayed finite).
        """
        trainer = self._require()
        if not first:
            self._forward(slots)
        stepping = self._pending & ~trainer.diverged.numpy()
        self._pending = np.zeros(self.n, dtype=bool)
        weights = torch.ones(self.n, trainer.n_tasks)
        # Runs past their base window: every held action through the map in one call (each row
        # equals HeldAction.weights of that run bit for bit); before it, unit weights.
        mapped = [int(i) for i in np.flatnonzero(stepping) if self.trackers[i].gaps is not None]
        if mapped:
            t = trainer.n_tasks
            amap = self.held[0].map
            # No held action means a = 0, whose prepared form is the map's (interp: p=0, q=1).
            zero = amap.prepare(torch.zeros(amap.action_dim(t), dtype=torch.float64))
            prepared = torch.stack(
                [zero if (p := self.held[i].prepared) is None else p for i in mapped]
            )
            state = StackedGaps(
                gaps=torch.stack([g for i in mapped if (g := self.trackers[i].gaps) is not None]),
                losses=torch.stack(
                    [x for i in mapped if (x := self.trackers[i].losses) is not None]
                ),
                lower_bounds=torch.stack([self.trackers[i].lower_bounds for i in mapped]),
                n_tasks=t,
            )
            weights[mapped] = amap.weights(prepared, state)
        result = trainer.apply(weights)
        for i in np.flatnonzero(stepping):
            self.trackers[i].record_weights(weights[i])
        return result.losses.numpy(), weights.numpy(), stepping

    def _validation(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Every slot's validation losses ``[N, T]`` and (metric rewards) metrics ``[N, M]``."""
        if not self.reward.needs_validation:
            return None, None
        losses, metrics = self._require().validation(self._val_rows, self.reward.needs_metrics)
        return losses.to(torch.float64).numpy(), None if metrics is None else metrics.numpy()

    def observations(self) -> np.ndarray:
        """Every slot's features ``[N, D]`` (float32; zeros for a slot that is not running)."""
        table = self.trackers[0].table
        out = np.zeros((self.n, table.dim(self._require().n_tasks)), dtype=np.float32)
        for i in range(self.n):
            if self.window_losses[i] is not None:
                out[i] = self.trackers[i].features()
        return out

    def hold(self, actions: np.ndarray) -> None:
        """Hold every running slot's action ``[N, A]`` for the next K steps (validated first).

        Raises:
            ValueError: A wrong shape or a NaN / infinite entry; no action is held then.
        """
        if actions.ndim != 2 or actions.shape[0] != self.n:
            raise ValueError(f"actions must have shape ({self.n}, A), got {actions.shape}")
        probes = [HeldAction(self.config.action_mode, self.config.tau) for _ in range(self.n)]
        t = self._require().n_tasks
        for i in np.flatnonzero(self.running):
            probes[i].hold(actions[i], t)  # raises before any slot's action changes
        for i in np.flatnonzero(self.running):
            self.held[i] = probes[i]

    def advance(self) -> BatchedOutcome:
        """Apply the held actions for K trainer steps in every running slot and score them.

        Afterwards no batch is pending: restart slots, then ``absorb`` for the next observation.
        """
        trainer = self._require()
        n, k_steps = self.n, self.config.steps_per_action
        running = self.running.copy()
        losses_sum = np.zeros((n, trainer.n_tasks))
        weights_sum = np.zeros((n, trainer.n_tasks))
        counts = np.zeros(n)
        for k in range(k_steps):
            active = running & ~trainer.done.numpy() & ~trainer.diverged.numpy()
            if k == 0:
                active &= self._pending
            if not active.any():
                break
            losses, weights, stepped = self._step(active, first=k == 0)
            # Float64 sums in step order: the per-instance engine's mean of the same rows.
            losses_sum[stepped] += losses[stepped].astype(np.float64)
            weights_sum[stepped] += weights[stepped].astype(np.float64)
            counts[stepped] += 1
        done = trainer.done.numpy().copy()
        val, metrics = self._validation()
        rewards = np.zeros(n)
        diverged = np.zeros(n, dtype=bool)
        terminated = np.zeros(n, dtype=bool)
        safe_counts = np.maximum(counts, 1)[:, None]
        window = losses_sum / safe_counts
        mean_w = weights_sum / safe_counts
        dead = trainer.diverged.numpy()
        for i in np.flatnonzero(running):
            val_now = None if val is None else val[i]
            metrics_now = None if metrics is None else metrics[i]
            reward = math.nan
            if not dead[i]:
                tracker = self.trackers[i]
                assert tracker.base_losses is not None
                inputs = RewardInput(
                    losses_prev=self.window_losses[i],  # type: ignore[arg-type]
                    losses_now=window[i],
                    base_losses=tracker.base_losses.numpy(),
                    lower_bounds=self._lower[i],
                    lr_ratio=tracker.lr_ratio,
                    val_prev=self.val_losses[i],
                    val_now=val_now,
                    val_metrics_prev=self.val_metrics[i],
                    val_metrics_now=metrics_now,
                    metric_signs=None if metrics_now is None else self._signs[i],
                )
                finite_val = (val_now is None or bool(np.isfinite(val_now).all())) and (
                    metrics_now is None or bool(np.isfinite(metrics_now).all())
                )
                if finite_val:
                    reward = self.reward(inputs, self.config.reward_scale, **self.reward_kwargs)
            if not math.isfinite(reward):
                rewards[i] = float(self.config.divergence_penalty)
                diverged[i] = terminated[i] = True
                self.running[i] = False
                continue
            rewards[i] = reward
            self.window_losses[i], self.val_losses[i] = window[i], val_now
            self.val_metrics[i] = metrics_now
            terminated[i] = bool(done[i])
            if done[i]:
                self.running[i] = False
        weights_out = np.where(counts[:, None] > 0, mean_w, 0.0)
        return BatchedOutcome(rewards, terminated, diverged, weights_out, val)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the episodes in progress exactly.

        Raises:
            RuntimeError: Never started.
        """
        trainer = self._require()
        return {
            "trainer": trainer.state_dict(),
            "instances": list(self.instances),
            "trackers": [t.state_dict() for t in self.trackers],
            "held": [None if h.action is None else h.action.clone() for h in self.held],
            "running": self.running.copy(),
            "pending": self._pending.copy(),
            "window_losses": [None if w is None else w.copy() for w in self.window_losses],
            "val_losses": [None if v is None else v.copy() for v in self.val_losses],
            "val_metrics": [None if v is None else v.copy() for v in self.val_metrics],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` (on engines built with the same configuration and N)."""
        benches = [self._benchmark(int(i)) for i in state["instances"]]
        if self.trainer is None:
            self.trainer = StackedTrainer(
                benches,
                list(state["instances"]),
                [self.config.train_for(int(i)) for i in state["instances"]],
                "log",
                adam=self.adam,
                balancer=self._balancer(),
            )
            self._val_rows = min(self.config.val_batch_size, len(benches[0].split("val")))
        self.trainer.load_state_dict(state["trainer"])
        self.trackers = [
            self._tracker(b, int(i)) for b, i in zip(benches, state["instances"], strict=True)
        ]
        for i, (bench, inst) in enumerate(zip(benches, state["instances"], strict=True)):
            self._install(i, bench, int(inst))
            self.trackers[i].load_state_dict(state["trackers"][i])
            self.held[i].hold(state["held"][i], bench.n_tasks)
        self.running = np.asarray(state["running"], dtype=bool).copy()
        self._pending = np.asarray(state["pending"], dtype=bool).copy()
        self.window_losses = [None if w is None else w.copy() for w in state["window_losses"]]
        self.val_losses = [None if v is None else v.copy() for v in state["val_losses"]]
        # States written before metric rewards existed have no metrics (their rewards need none).
        metrics = state.get("val_metrics", [None] * self.n)
        self.val_metrics = [None if v is None else v.copy() for v in metrics]


__all__ = ["BatchedEpisodes", "BatchedOutcome"]
