"""The two-phase MTL trainer (``docs/architecture.md``, "One training step").

``forward()`` draws the next batch, computes the raw task losses and feeds the gap tracker;
``apply(weights)`` transforms the losses, asks the weighting (if no weights are given), lets the
run's update rule write the gradients (``mtl_backends.updates``: one backward pass, per-task
gradients through the balancer, or the flat wrapper), and takes the optimizer step. ``step()`` is
the two together. Every decision (IGBv1, an exported policy, an RL agent) is made after the current
batch's losses are absorbed and applies to that batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from mtl_backends.atomic import atomic_torch_save
from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.benchmarks.base import Benchmark, predict
from mtl_backends.benchmarks.streamed import StreamedBatches, StreamedBenchmark, evaluate_streamed
from mtl_backends.config import TrainConfig, resolve_device
from mtl_backends.features import FeatureSpec
from mtl_backends.gaps import GapTracker, second_epoch_window
from mtl_backends.metrics import delta_m, delta_p
from mtl_backends.registry import ConfigError
from mtl_backends.results import DivergenceError, EvalResult, FitHistory, Reference, StepResult
from mtl_backends.rng import RngStream, generator_state, set_generator_state
from mtl_backends.transforms import apply_transform
from mtl_backends.updates import Parameters, StepInputs, make_update_rule
from mtl_backends.weightings.base import LossWeighting, StepContext


class TrainerSeeds(NamedTuple):
    """The independent streams a run's seed is split into (``SeedSequence(seed)``)."""

    init: int
    data: int
    weighting: int
    balancer: int
    torch: int


def trainer_seeds(seed: int) -> TrainerSeeds:
    """The model-initialisation, batch-order, weighting, balancer and torch seeds of ``seed``.

    ``MTLTrainer`` and the stacked trainer (``mtl_backends.stacked``) split a run's seed the same
    way, so one seed is the same run in both.
    """
    return TrainerSeeds(*(int(s) for s in np.random.SeedSequence(seed).generate_state(5)))


def explosion_limit(lower: Tensor, margin: Tensor, factor: float) -> Tensor:
    """Per-task loss above which a run explodes: ``L* + factor · margin`` (float64, CPU).

    ``margin`` is each task's first-step loss above its bound ``L*``; a task that starts at its
    bound (``margin <= 0``) has no scale to explode from, so its limit is ``+inf``.
    """
    limit = lower.to("cpu", torch.float64) + factor * margin
    return torch.where(margin > 0, limit, torch.full_like(limit, math.inf))


def lr_factor(config: TrainConfig, step: int) -> float:
    """The learning-rate multiplier of step ``step`` under ``config.lr_schedule``."""
    if config.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))
    if config.lr_schedule == "step":
        return float(config.lr_gamma ** (step // config.lr_step_size))
    return 1.0


class MTLTrainer:
    """Trains one benchmark's model with a loss weighting and a gradient balancer.

    Args:
        benchmark: The problem (data, model, losses, metrics).
        weighting: Loss weighting; its ``transform`` is applied to the losses.
        balancer: Gradient balancer; ``needs_jacobian = False`` means one backward pass.
        config: Training settings (default ``TrainConfig()``).
        seed: Drives model initialisation, batch order, the methods' generators and the torch RNG
            used inside steps (dropout), through independent ``SeedSequence`` streams.
        reference: STL reference metrics for Δm/Δp in ``evaluate``.
        features: Feature settings of the gap tracker (default: the weighting's ``feature_spec``
            when it declares one, e.g. ``PolicyWeighting``, else ``FeatureSpec()``).

    Raises:
        ConfigError: The balancer requires a transform the weighting does not declare.
    """

    def __init__(
        self,
        benchmark: Benchmark,
        weighting: LossWeighting,
        balancer: GradientBalancer,
        config: TrainConfig | None = None,
        seed: int = 0,
        reference: Reference | None = None,
        features: FeatureSpec | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        required = balancer.requires_transform
        if required is not None and required != weighting.transform:
            raise ConfigError(
                f"transform conflict: balancer {type(balancer).__name__} requires the {required!r} "
                f"transform but weighting {type(weighting).__name__} declares "
                f"{weighting.transform!r}; "
                f"choose a weighting on the {required!r} transform"
            )
        self.benchmark = benchmark
        self.weighting = weighting
        self.balancer = balancer
        self.seed = seed
        self.reference = reference
        self.device = resolve_device(self.config.device)
        if self.config.mixed_precision != "none" and self.device.type not in ("cpu", "cuda"):
            raise ConfigError(
                f"train.mixed_precision {self.config.mixed_precision} runs on cpu or cuda, not "
                f"on {self.device.type}; set train.mixed_precision: none"
            )
        self.n_tasks = benchmark.n_tasks
        s_init, s_data, s_weighting, s_balancer, s_torch = trainer_seeds(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s_init)
            self.model = benchmark.build_model().to(self.device)
        self._rng = RngStream(s_torch)
        self._data_generator = torch.Generator().manual_seed(s_data)
        weighting.reset(self.n_tasks, torch.Generator().manual_seed(s_weighting))
        balancer.reset(self.n_tasks, torch.Generator().manual_seed(s_balancer))
        self._lower_bounds = benchmark.lower_bounds.to(self.device)
        # A streamed benchmark's batches come through a DataLoader in the same seeded order
        # (``benchmarks/streamed.py``); an in-memory one's are indexed from device tensors.
        self._stream: StreamedBatches | None = None
        if isinstance(benchmark, StreamedBenchmark):
            dataset = benchmark.dataset("train")
            n_train = len(dataset)  # type: ignore[arg-type]
            self._stream = StreamedBatches(
                dataset, self.config.batch_size, self.device, self.config.num_workers, s_data
            )
        else:
            train = benchmark.split("train")
            self._train_x = train.inputs.to(self.device)
            self._train_y = train.targets.to(self.device)
            n_train = len(train)
        self._n_train = n_train
        self.steps_per_epoch = n_train // self.config.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"batch_size {self.config.batch_size} is larger than the training split "
                f"({n_train} rows)"
            )
        self.shared_params = self.model.shared_parameters()
        self.task_params = self.model.task_parameters()
        self._extra_params = list(weighting.parameters())
        self.optimizer = self._build_optimizer()
        self.update = make_update_rule(
            Parameters(self.model, self.shared_params, self.task_params, self._extra_params),
            balancer,
            self.config,
            self._transformed_losses,
            self.n_tasks,
            seed,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        base_window = self.config.base_window or second_epoch_window(self.steps_per_epoch)
        self.progress = GapTracker(
            self.n_tasks,
            base_window=base_window,
            lower_bounds=benchmark.lower_bounds,
            total_steps=self.config.steps,
            # A weighting that reads the features (an exported policy) declares the settings it
            # was trained with; an explicit ``features`` argument wins.
            spec=features if features is not None else getattr(weighting, "feature_spec", None),
            lr0=self.config.lr,
        )
        self.step_count = 0
        self._perm: Tensor | None = None
        self._pending: Tensor | None = None
        self._pending_raw: Tensor | None = None
        # The first step's losses above L* (float64, CPU): a later loss above
        # `divergence_factor` times this margin is an exploding run (``_check_explosion``).
        self._first_margin: Tensor | None = None
        self._explosion_limit: Tensor | None = None

    # -- construction helpers -------------------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        if self._extra_params:
            groups.append({"params": self._extra_params, "weight_decay": 0.0})
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        if c.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay)

    def _lr_factor(self, step: int) -> float:
        return lr_factor(self.config, step)

    # -- properties -----------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """Learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def epoch(self) -> int:
        """Index of the epoch of the next step."""
        return self.step_count // self.steps_per_epoch

    @property
    def done(self) -> bool:
        """Whether the step budget is spent."""
        return self.step_count >= self.config.steps

    def context(self) -> StepContext:
        """The state a weighting sees now (after ``forward``)."""
        if self.progress.losses is None:
            raise RuntimeError("no losses absorbed yet: call forward() first")
        return StepContext(
            losses=self.progress.losses.to(torch.float32),
            progress=self.progress,
            step=self.step_count,
            epoch=self.epoch,
            steps_per_epoch=self.steps_per_epoch,
            lr_ratio=self.progress.lr_ratio,
            shared_parameters=tuple(self.shared_params),
            batch_losses=self._batch_losses,
        )

    def _batch_losses(self) -> Tensor:
        # StepContext.batch_losses: called by a weighting (FAMO) in its hooks, which run outside
        # the RNG block of ``apply``; it draws from the run's torch stream like a training forward.
        x, y = self._batch
        with torch.no_grad(), self._rng.active():
            return self.benchmark.losses(self.model(x), y).detach()

    # -- the two phases -------------------------------------------------------------------------
    def _next_batch(self) -> tuple[Tensor, Tensor]:
        n, bs = self._n_train, self.config.batch_size
        position = self.step_count % self.steps_per_epoch
        pos = position * bs
        if self._stream is not None:
            if pos == 0 or self._perm is None:
                self._perm = torch.randperm(n, generator=self._data_generator)
            return self._stream.batch(self._perm, position, self.epoch)
        if pos == 0 or self._perm is None:
            self._perm = torch.randperm(n, generator=self._data_generator).to(self.device)
        idx = self._perm[pos : pos + bs]
        return self._train_x[idx], self._train_y[idx]

    def forward(self) -> Tensor:
        """Compute the next batch's raw losses ``[T]`` and feed them to the gap tracker.

        Raises:
            RuntimeError: Called twice without ``apply``.
            DivergenceError: A loss is NaN or infinite, or (``config.divergence_factor``) more
                than that many times its first-step value above ``L*`` (names the tasks).
        """
        if self._pending is not None:
            raise RuntimeError("forward() called twice without apply() in between")
        x, y = self._next_batch()
        self.model.train()
        with self._rng.active(), self._autocast():
            outputs = self.model(x)
            losses = self.benchmark.losses(outputs, y)
        # Under bf16 autocast the losses may come out in bfloat16: the gap tracker, the
        # weightings and the update see float32 (the graph keeps the mixed-precision ops).
        losses = losses.float()
        raw = losses.detach()
        finite = torch.isfinite(raw)
        if not bool(finite.all()):
            bad = [self.benchmark.task_names[i] for i in torch.nonzero(~finite).flatten().tolist()]
            raise DivergenceError(
                f"non-finite loss at step {self.step_count} for task(s) {', '.join(bad)}; "
                f"lower train.lr (now {self.config.lr:g}) or set train.grad_clip"
            )
        self._check_explosion(raw)
        self.progress.update(raw, self.step_count, self.lr)
        self._pending, self._pending_raw = losses, raw
        self._batch = (x, y)
        return raw.clone()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast of the training forward (``train.mixed_precision``), else nothing."""
        if self.config.mixed_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _check_explosion(self, raw: Tensor) -> None:
        """Raise ``DivergenceError`` for a finite loss far above its first-step value.

        The first call records each task's margin above ``L*``; later losses are compared with
        ``L* + divergence_factor * margin`` (one vectorised comparison per step).
        """
        factor = self.config.divergence_factor
        if factor is None:
            return
        if self._explosion_limit is None:
            margin = raw.to(torch.float64) - self._lower_bounds.to(torch.float64)
            self._set_first_margin(margin)
            return
        if bool((raw > self._explosion_limit).any()):
            assert self._first_margin is not None
            first = self._lower_bounds.to("cpu", torch.float64) + self._first_margin
            over = torch.nonzero((raw > self._explosion_limit).cpu()).flatten().tolist()
            bad = [
                f"{self.benchmark.task_names[i]} ({float(raw[i]):.4g}, first {float(first[i]):.4g})"
                for i in over
            ]
            raise DivergenceError(
                f"exploding loss at step {self.step_count}: task(s) {', '.join(bad)} rose more "
                f"than {factor:g}x above their first-step loss (train.divergence_factor); lower "
                f"train.lr (now {self.config.lr:g}), set train.grad_clip, or raise "
                "train.divergence_factor"
            )

    def _set_first_margin(self, margin: Tensor | None) -> None:
        self._first_margin = None if margin is None else margin.detach().to("cpu", torch.float64)
        factor = self.config.divergence_factor
        if self._first_margin is None or factor is None:
            self._explosion_limit = None
            return
        limit = explosion_limit(self._lower_bounds, self._first_margin, factor)
        self._explosion_limit = limit.to(device=self.device, dtype=torch.float32)

    def _check_weights(self, weights: Tensor | Sequence[float] | np.ndarray) -> Tensor:
        try:
            w = torch.as_tensor(weights, dtype=torch.float32).detach().to(self.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"weights must be {self.n_tasks} numbers, got {weights!r} ({err})"
            ) from None
        if w.shape != (self.n_tasks,):
            raise ValueError(f"weights must have shape ({self.n_tasks},), got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be finite, got {w.tolist()}")
        return w

    def apply(self, weights: Tensor | Sequence[float] | np.ndarray | None = None) -> StepResult:
        """Finish the step on the batch of the last ``forward``.

        Args:
            weights: Task weights ``[T]``; ``None`` asks the weighting.

        Returns:
            The step's raw losses, the weights used and the learning rate.
        """
        if self._pending is None or self._pending_raw is None:
            raise RuntimeError("apply() needs forward() first")
        losses, raw = self._pending, self._pending_raw
        context = self.context()
        w = self._check_weights(self.weighting(context) if weights is None else weights)
        lr = self.lr
        with self._rng.active():
            transformed = self._transform(losses)
            extra = self.weighting.extra_loss(losses)
            self.optimizer.zero_grad(set_to_none=True)
            self.update.backward(StepInputs(transformed, w, raw, extra, *self._batch))
            if self.config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
        self.progress.record_weights(w)
        self.weighting.after_step(context)
        result = StepResult(step=self.step_count, losses=raw.cpu(), weights=w.cpu(), lr=lr)
        self.step_count += 1
        self._pending = self._pending_raw = None
        return result

    def step(self, weights: Tensor | Sequence[float] | np.ndarray | None = None) -> StepResult:
        """``forward()`` then ``apply(weights)``.

        Raises:
            ValueError: ``weights`` of the wrong shape or not finite; checked before the batch
                is drawn, so the trainer is left exactly as it was.
        """
        checked = None if weights is None else self._check_weights(weights)
        self.forward()
        return self.apply(checked)

    def _transform(self, losses: Tensor) -> Tensor:
        return apply_transform(
            self.weighting.transform,
            losses,
            self._lower_bounds,
            self.config.eps,
            self.benchmark.task_names,
        )

    def _transformed_losses(self, outputs: Any, targets: Tensor) -> Tensor:
        # The flat update re-runs the forward pass at perturbed parameters.
        return self._transform(self.benchmark.losses(outputs, targets))

    # -- evaluation and loops -------------------------------------------------------------------
    def evaluate(self, split: str = "val") -> EvalResult:
        """Metrics on a whole split, with Δm and Δp when an STL reference is set."""
        if isinstance(self.benchmark, StreamedBenchmark):
            with self._rng.active():
                metrics, losses = evaluate_streamed(
                    self.model,
                    self.benchmark,
                    split,
                    self.config.eval_batch_size,
                    self.device,
                    self.config.num_workers,
                )
        else:
            data = self.benchmark.split(split)
            with self._rng.active():
                outputs = predict(
                    self.model, data.inputs.to(self.device), self.config.eval_batch_size
                )
                targets = data.targets.to(self.device)
                metrics = self.benchmark.metrics(outputs, targets)
                losses = [float(v) for v in self.benchmark.losses(outputs, targets)]
        dm = dp = None
        if self.reference is not None and split in self.reference:
            ref = self.reference[split]
            names = [m.name for m in self.benchmark.metric_specs]
            missing = [n for n in names if n not in ref]
            if missing:
                raise ValueError(
                    f"STL reference for split {split!r} lacks metric(s) {', '.join(missing)}"
                )
            values = [metrics[n] for n in names]
            refs = [ref[n] for n in names]
            dm = delta_m(values, refs, self.benchmark.higher_is_better)
            dp = delta_p(values, refs, self.benchmark.higher_is_better, self.benchmark.metric_tasks)
        return EvalResult(split, self.step_count, metrics, losses, dm, dp)

    def fit(
        self,
        steps: int | None = None,
        callbacks: Sequence[Callable[[MTLTrainer, StepResult], None]] = (),
        progress_bar: bool = False,
        eval_every: int | None = None,
        eval_split: str = "val",
        record: bool = True,
    ) -> FitHistory:
        """Train until the budget is spent (or for ``steps`` more steps).

        Args:
            steps: Steps to take (default: the rest of ``config.steps``).
            callbacks: Called as ``cb(trainer, result)`` after every step.
            progress_bar: Show progress (a bar on a terminal, plain lines in a log).
            eval_every: Evaluate ``eval_split`` every this many steps (and at the end).
            eval_split: Split of the periodic evaluations.
            record: Keep per-step losses and weights in the returned history.

        Returns:
            The recorded history.
        """
        from mtl_backends.progress import Progress

        n = self.config.steps - self.step_count if steps is None else steps
        history = FitHistory()
        bar = Progress(n, "train", "step", disable=not progress_bar, leave=False)
        try:
            for _ in range(n):
                result = self.step()
                if record:
                    history.losses.append(result.losses.tolist())
                    history.weights.append(result.weights.tolist())
                for cb in callbacks:
                    cb(self, result)
                if eval_every and self.step_count % eval_every == 0:
                    history.evals.append(self.evaluate(eval_split))
                bar.update(1)
        finally:
            bar.close()
        if eval_every and (not history.evals or history.evals[-1].step != self.step_count):
            history.evals.append(self.evaluate(eval_split))
        return history

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit for bit.

        Model, optimizer, scheduler, data order, the methods' state and every RNG.
        """
        if self._pending is not None:
            raise RuntimeError(
                "state_dict() between forward() and apply() is not resumable; call apply() first"
            )
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step_count": self.step_count,
            "perm": None if self._perm is None else self._perm.cpu().clone(),
            "data_generator": self._data_generator.get_state(),
            "rng_state": self._rng.torch_state.clone(),
            "progress": self.progress.state_dict(),
            "weighting": self.weighting.state_dict(),
            "weighting_generator": generator_state(self.weighting),
            "balancer": self.balancer.state_dict(),
            "balancer_generator": generator_state(self.balancer),
            "update": self.update.state_dict(),
            "first_margin": None if self._first_margin is None else self._first_margin.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (on a trainer built with the same arguments)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step_count = int(state["step_count"])
        perm_device = "cpu" if self._stream is not None else self.device
        self._perm = None if state["perm"] is None else state["perm"].to(perm_device)
        self._data_generator.set_state(state["data_generator"])
        self._rng.torch_state = state["rng_state"].clone()
        self.progress.load_state_dict(state["progress"])
        self.weighting.load_state_dict(state["weighting"])
        set_generator_state(self.weighting, state["weighting_generator"])
        self.balancer.load_state_dict(state["balancer"])
        set_generator_state(self.balancer, state["balancer_generator"])
        self.update.load_state_dict(state["update"])
        # Checkpoints written before the explosion check have no first-step margin: the check
        # then starts from the next step's losses.
        self._set_first_margin(state.get("first_margin"))
        self._pending = self._pending_raw = None

    def save_checkpoint(self, path: str | Path) -> None:
        """Write ``state_dict()`` atomically (a temporary file renamed over ``path``)."""
        atomic_torch_save(self.state_dict(), path)

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a checkpoint written by ``save_checkpoint`` (tensors only; no code is executed)."""
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
