"""``StackedTrainer``: N independent MTL runs of one benchmark configuration, trained in lockstep.

Each slot is one MTL run, equivalent to an ``MTLTrainer`` built with the slot's benchmark, seed and
``TrainConfig`` (``sum`` balancer, explicit weights): same initial parameters, same batch order,
same Adam. All slots share the architecture, the task count ``T``, the batch size and the data
shapes, so their parameters are stacked along a leading slot axis and one step of all slots is a
handful of batched kernels:

* the batch of every slot is gathered with one ``index_select`` per tensor (``[N, B, ...]``);
* the per-task losses ``[N, T]`` come from ``vmap`` over ``functional_call`` of the benchmark's
  model followed by ``benchmark.losses`` (which must be vmappable);
* the gradients of ``Σ_i Σ_t w_it · transform(L_it)`` with respect to the stacked parameters are
  the N per-slot gradients (slots share no parameter); one reverse pass through the vmapped
  graph computes them all, so ``forward()`` and ``apply()`` keep ``MTLTrainer``'s two-phase API
  without a second forward pass;
* ``SlotAdam`` keeps each slot's step count and learning rate (``mtl_backends.stacked.adam``);
* with a gradient balancer that needs per-task gradients (``balancer=``, e.g. ``db_mtl``), one
  batched reverse pass (``is_grads_batched``, one task per batch entry) gives every slot's
  Jacobian ``[T, P]`` of the shared parameters at once; each slot's own copy of the balancer (its
  own state, e.g. DB-MTL's EMA gradients) combines its rows as ``MTLTrainer``'s
  ``JacobianUpdate`` does, and the heads get ``∇ Σ_t w_t h_t l_t`` in a second pass.

Losses and parameters equal ``MTLTrainer``'s to float rounding, not bit for bit: batched matrix
products round differently from single ones (measured: 2.5e-7 relative on losses after 30 steps,
3e-6 on parameters after 1000; ``tests/mtl_backends/stacked``). A slot whose loss becomes NaN or
infinite, or explodes (a task's loss above ``L*`` more than ``train.divergence_factor`` times its
first-step value, as ``MTLTrainer`` checks), is marked diverged and frozen (no further updates, no
effect on the other slots) until ``reset_slot``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.benchmarks import Benchmark, make_benchmark
from mtl_backends.config import TrainConfig, resolve_device
from mtl_backends.stacked.adam import AdamImpl, SlotAdam
from mtl_backends.stacked.models import (
    BatchedForward,
    build_model,
    check_stackable,
    dense_order,
    mlp_forward,
    signature,
)
from mtl_backends.trainer import explosion_limit, lr_factor, trainer_seeds

LossesFn = Callable[[list[Tensor], Tensor], Tensor]
"""``losses(outputs, targets) -> [T]``, the signature of ``Benchmark.losses``."""

TRANSFORMS: tuple[str, ...] = ("identity", "log")


def check_stackable_config(config: TrainConfig) -> None:
    """Refuse training settings the stacked trainer does not implement.

    Raises:
        ValueError: Another optimizer than Adam, gradient clipping, the flat update or mixed
            precision.
    """
    if config.optimizer != "adam":
        raise ValueError(f"StackedTrainer supports optimizer 'adam' only, got {config.optimizer!r}")
    if config.grad_clip is not None:
        raise ValueError("StackedTrainer does not support grad_clip")
    if config.flat_rho is not None:
        raise ValueError("StackedTrainer does not support flat_rho")
    if config.mixed_precision != "none":
        raise ValueError("StackedTrainer does not support mixed_precision (float32 only)")


def _check_config(config: TrainConfig, reference: TrainConfig) -> None:
    check_stackable_config(config)
    for key in ("batch_size", "device"):
        if getattr(config, key) != getattr(reference, key):
            raise ValueError(
                f"all slots must share {key}: got {getattr(config, key)!r}, "
                f"the trainer uses {getattr(reference, key)!r}"
            )


@dataclass(frozen=True)
class StackedStepResult:
    """What one stacked step did.

    Attributes:
        step: Index of the step each slot took (its step count before the step) ``[N]``.
        losses: Raw batch losses ``[N, T]``.
        weights: Weights given ``[N, T]``.
        lr: Learning rate of each slot's step ``[N]`` (float64).
        updated: Slots whose parameters were updated ``[N]`` (the ones not diverged).
        diverged: Slots diverged, now or earlier, and frozen until reset ``[N]``.
    """

    step: Tensor
    losses: Tensor
    weights: Tensor
    lr: Tensor
    updated: Tensor
    diverged: Tensor


class StackedTrainer:
    """N independent MTL runs of one benchmark configuration, trained in lockstep.

    Slot ``i`` reproduces ``MTLTrainer(benchmarks[i], weighting, balancer, configs[i],
    seed=seeds[i])`` stepped with explicit weights (``weighting.transform == transform``; the
    balancer ``sum`` unless ``balancer`` is given): same initial model, batch order, balancer
    state, learning-rate schedule and Adam. Losses and parameters match to float rounding
    (batched matrix products round differently from single ones; see ``NOTES.md``).

    Args:
        benchmarks: One benchmark per slot. All share the model architecture, ``T``, the
            training-set size and the input and target shapes.
        seeds: One ``MTLTrainer`` seed per slot.
        configs: One ``TrainConfig`` for all slots or one per slot (default ``TrainConfig()``).
            Slots may differ in ``lr``, ``lr_schedule``, ``steps``, ``lr_step_size``,
            ``lr_gamma``, ``weight_decay`` and ``eps``; they share ``batch_size`` and ``device``.
            Only ``optimizer="adam"`` without ``grad_clip`` or ``flat_rho`` is supported.
        transform: Loss transform of the objective, ``"identity"`` or ``"log"``.
        losses_fn: Vmappable replacement of ``benchmarks[0].losses``, used for all slots
            (default: ``benchmarks[0].losses``). Every slot's ``benchmark.losses`` must agree
            with it (checked on the slot's first batch when ``check_losses``).
        adam: ``"fused"`` (default) or ``"foreach"``; see ``AdamImpl``. ``"fused"`` falls back
            to ``"foreach"`` on a torch without ``torch._fused_adam_``.
        check_losses: Check, whenever a slot is filled, that ``losses_fn`` agrees with the
            slot's ``benchmark.losses`` on the slot's first ``batch_size`` training rows.
        balancer: A gradient balancer (``None``: ``sum``). Every slot gets its own copy, reset
            at each new run with the balancer seed ``MTLTrainer`` gives it; a balancer with
            ``needs_jacobian`` makes every step compute per-task gradients of the shared
            parameters (the model's ``shared_parameters()``), ``config.jacobian``'s method.

    Raises:
        ValueError: Incompatible slots, an unsupported config or model, a losses function
            that cannot be vmapped, or a balancer whose required loss transform differs from
            ``transform`` or whose model declares no shared parameters.
    """

    def __init__(
        self,
        benchmarks: Sequence[Benchmark],
        seeds: Sequence[int],
        configs: TrainConfig | Sequence[TrainConfig] | None = None,
        transform: str = "log",
        *,
        losses_fn: LossesFn | None = None,
        adam: AdamImpl = "fused",
        check_losses: bool = True,
        balancer: GradientBalancer | None = None,
    ) -> None:
        n = len(benchmarks)
        if n < 1:
            raise ValueError("StackedTrainer needs at least one slot")
        if len(seeds) != n:
            raise ValueError(f"got {n} benchmarks but {len(seeds)} seeds")
        if configs is None or isinstance(configs, TrainConfig):
            config_list = [configs or TrainConfig()] * n
        else:
            config_list = list(configs)
        if len(config_list) != n:
            raise ValueError(f"got {n} benchmarks but {len(config_list)} configs")
        if transform not in TRANSFORMS:
            raise ValueError(
                f"unknown loss transform {transform!r}; valid choices: {', '.join(TRANSFORMS)}"
            )
        self._reference_config = config_list[0]
        for c in config_list:
            _check_config(c, self._reference_config)
        needed = None if balancer is None else balancer.requires_transform
        if needed is not None and needed != transform:
            raise ValueError(
                f"balancer {type(balancer).__name__} requires the {needed!r} loss transform, the "
                f"trainer uses {transform!r}"
            )
        # Only a balancer that reads per-task gradients changes the update; ``sum`` and any
        # other ``needs_jacobian = False`` balancer keep the single summed backward pass.
        self._balancer = balancer if balancer is not None and balancer.needs_jacobian else None
        self._balancers: list[GradientBalancer] = []
        # TrainConfig already refuses an unknown method. The first slot's applies to all (both
        # methods give the same gradients to float rounding).
        self._jacobian_method = self._reference_config.jacobian
        self.transform = transform
        self._adam_impl: AdamImpl = adam
        self.check_losses = check_losses
        self.device = resolve_device(self._reference_config.device)
        self.batch_size = self._reference_config.batch_size
        self.n_slots = n
        reference = benchmarks[0]
        self.n_tasks = reference.n_tasks
        self._losses_fn: LossesFn = losses_fn if losses_fn is not None else reference.losses

        models = [build_model(b, s, self.device) for b, s in zip(benchmarks, seeds, strict=True)]
        check_stackable(models[0])
        self._signature = signature(models[0])
        self._skeleton = copy.deepcopy(models[0]).to("meta")
        params, _ = stack_module_state(models)
        self._params: dict[str, Tensor] = params
        self._shared_names = self._shared_parameter_names(models[0])
        self._trainable = [name for name, _, _, grad in self._signature if grad]
        self._leaves = [self._params[name] for name in self._trainable]

        train, val = reference.split("train"), reference.split("val")
        self.n_train, self.n_val = len(train), len(val)
        self.steps_per_epoch = self.n_train // self.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the training split "
                f"({self.n_train} rows)"
            )
        dev = self.device
        self._x = torch.empty((n, *train.inputs.shape), dtype=train.inputs.dtype, device=dev)
        self._y = torch.empty((n, *train.targets.shape), dtype=train.targets.dtype, device=dev)
        self._val_x = torch.empty((n, *val.inputs.shape), dtype=val.inputs.dtype, device=dev)
        self._val_y = torch.empty((n, *val.targets.shape), dtype=val.targets.dtype, device=dev)
        self._lower = torch.zeros((n, self.n_tasks), device=dev)
        self._log_eps = torch.zeros((n, 1), device=dev)
        self._perm = torch.zeros((n, self.n_train), dtype=torch.int64, device=dev)
        self._has_perm = np.zeros(n, dtype=bool)
        self._steps = np.zeros(n, dtype=np.int64)
        self._dead = np.zeros(n, dtype=bool)
        # Explosion limits (``MTLTrainer._check_explosion``): L* + factor x the first-step margin,
        # set at each run's first forward; +inf until then and for tasks that start at L*.
        self._limit = torch.full((n, self.n_tasks), torch.inf, device=dev)
        self._first_margin = torch.zeros((n, self.n_tasks), dtype=torch.float64)
        self._has_margin = np.zeros(n, dtype=bool)
        self._generators = [torch.Generator() for _ in range(n)]
        self._benchmarks: list[Benchmark] = list(benchmarks)
        self._seeds = [int(s) for s in seeds]
        self._configs = config_list
        self._row_offsets = (torch.arange(n, device=dev) * self.n_train)[:, None]
        self._batch_arange = torch.arange(self.batch_size, device=dev)[None, :]
        self._pending: Tensor | None = None
        self._pending_active = np.ones(n, dtype=bool)

        self._batched_losses_of_outputs = vmap(self._losses_fn)
        fast = mlp_forward(models[0])
        if fast is not None:
            mlp: BatchedForward = fast

            def batched_losses(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
                losses: Tensor = self._batched_losses_of_outputs(mlp(params, x), y)
                return losses

            self._batched_losses = batched_losses
            self._batched_outputs = mlp
        else:

            def slot_losses(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
                return self._losses_fn(list(functional_call(self._skeleton, params, (x,))), y)

            def slot_outputs(params: dict[str, Tensor], x: Tensor) -> list[Tensor]:
                return list(functional_call(self._skeleton, params, (x,)))

            self._batched_losses = vmap(slot_losses)
            self._batched_outputs = vmap(slot_outputs)

        if self._balancer is not None:
            # Placeholders: _install gives every slot a fresh, reset copy of the prototype.
            self._balancers = [self._balancer] * n
        for i, (b, s, c, m) in enumerate(zip(benchmarks, seeds, config_list, models, strict=True)):
            self._install(i, b, int(s), c, m, copy_params=False)
        self._adopt_gradient_layout()
        self.adam = SlotAdam(self._leaves, self._orders, self._adam_impl)

    def _shared_parameter_names(self, model: nn.Module) -> frozenset[str]:
        """Names of the parameters a balancer balances (``shared_parameters()``; none for sum)."""
        if self._balancer is None:
            return frozenset()
        shared_fn = getattr(model, "shared_parameters", None)
        if not callable(shared_fn):
            raise ValueError(
                f"balancer {type(self._balancer).__name__} balances the shared parameters, but "
                f"the model {type(model).__name__} has no shared_parameters()"
            )
        ids = {id(q) for q in shared_fn()}
        names = frozenset(name for name, q in model.named_parameters() if id(q) in ids)
        if not names:
            raise ValueError(f"the model {type(model).__name__} declares no shared parameters")
        return names

    # -- slots ----------------------------------------------------------------------------------
    def _check_compatible(self, benchmark: Benchmark, model: nn.Module) -> None:
        check_stackable(model)
        if benchmark.n_tasks != self.n_tasks:
            raise ValueError(
                f"slot benchmark has {benchmark.n_tasks} tasks, expected {self.n_tasks}"
            )
        if signature(model) != self._signature:
            raise ValueError("slot model differs in architecture (parameter names or shapes)")
        for split, x, y in (("train", self._x, self._y), ("val", self._val_x, self._val_y)):
            data = benchmark.split(split)
            for what, got, ref in (("inputs", data.inputs, x[0]), ("targets", data.targets, y[0])):
                if got.shape != ref.shape or got.dtype != ref.dtype:
                    raise ValueError(
                        f"slot {split} {what} are {tuple(got.shape)} {got.dtype}, the trainer "
                        f"holds {tuple(ref.shape)} {ref.dtype}: slots must share split sizes and "
                        "data shapes"
                    )
        if self.check_losses:
            train = benchmark.split("train")
            x = train.inputs[: self.batch_size].to(self.device)
            y = train.targets[: self.batch_size].to(self.device)
            with torch.no_grad():
                outputs = list(model(x))
                own = benchmark.losses(outputs, y)
                shared = self._losses_fn(outputs, y)
            if own.shape != shared.shape or not torch.allclose(
                own, shared, rtol=1e-5, atol=0.0, equal_nan=True
            ):
                raise ValueError(
                    f"the trainer's losses function gives {shared.tolist()} on the slot's first "
                    f"batch but the slot's benchmark.losses gives {own.tolist()}; slots must "
                    "share the losses function (pass a matching losses_fn)"
                )

    def _install(
        self,
        i: int,
        benchmark: Benchmark,
        seed: int,
        config: TrainConfig,
        model: nn.Module | None,
        copy_params: bool = True,
    ) -> None:
        _check_config(config, self._reference_config)
        if model is not None:
            self._check_compatible(benchmark, model)
        train, val = benchmark.split("train"), benchmark.split("val")
        with torch.no_grad():
            if model is not None and copy_params:
                source = dict(model.named_parameters())
                for name, p in self._params.items():
                    p[i].copy_(source[name])
            self._x[i].copy_(train.inputs)
            self._y[i].copy_(train.targets)
            self._val_x[i].copy_(val.inputs)
            self._val_y[i].copy_(val.targets)
            self._lower[i].copy_(benchmark.lower_bounds)
            self._log_eps[i] = config.eps
            self._perm[i].zero_()
        seeds = trainer_seeds(seed)
        self._generators[i] = torch.Generator().manual_seed(seeds.data)
        if self._balancer is not None:
            # A fresh copy of the prototype per run (no state of the slot's previous run can
            # survive), reset as MTLTrainer resets its balancer for this seed.
            fresh = copy.deepcopy(self._balancer)
            fresh.reset(self.n_tasks, torch.Generator().manual_seed(seeds.balancer))
            self._balancers[i] = fresh
        self._has_perm[i] = False
        self._steps[i] = 0
        self._dead[i] = False
        self._has_margin[i] = False
        self._limit[i] = torch.inf
        self._benchmarks[i] = benchmark
        self._seeds[i] = seed
        self._configs[i] = config

    def discard(self) -> None:
        """Drop the batch ``forward()`` drew, without stepping (before every slot is reset).

        The slots' data orders have advanced past that batch; a slot that is not reset afterwards
        continues with the next one.
        """
        self._pending = None
        self._pending_active = np.ones(self.n_slots, dtype=bool)

    def reset_slot(
        self, i: int, benchmark: Benchmark, seed: int, config: TrainConfig | None = None
    ) -> None:
        """Put a fresh run into slot ``i``; the other slots are untouched.

        The slot gets the benchmark's data, the ``MTLTrainer`` initial model and batch order of
        ``seed``, zeroed Adam state and step 0.

        Args:
            i: Slot index.
            benchmark: The new run's benchmark (compatible with the trainer, see the class).
            seed: The new run's seed.
            config: The new run's config (default: the slot's current one).

        Raises:
            RuntimeError: Called between ``forward()`` and ``apply()``.
            ValueError: Incompatible benchmark or config.
        """
        if self._pending is not None:
            raise RuntimeError("reset_slot() between forward() and apply(); call apply() first")
        if not 0 <= i < self.n_slots:
            raise IndexError(f"slot {i} out of range for {self.n_slots} slots")
        config = config if config is not None else self._configs[i]
        _check_config(config, self._reference_config)
        model = build_model(benchmark, seed, self.device)
        self._install(i, benchmark, int(seed), config, model)
        self.adam.reset_slot(i)

    def _adopt_gradient_layout(self) -> None:
        """Check the losses vmap, and store parameters and Adam state in the gradients' layout.

        A dry forward and backward pass on the first rows tells the memory layout autograd gives
        each gradient (a linear layer's weight gradient comes transposed out of the batched
        matrix product). Parameters and Adam moments are re-allocated in that layout, so the
        elementwise Adam reads all four tensors in the same order and the fused kernel can be
        handed contiguous per-slot views without copying gradients.
        """
        x = self._x[:, : self.batch_size]
        y = self._y[:, : self.batch_size]
        try:
            with torch.enable_grad():
                losses = self._batched_losses(self._params, x, y)
        except (RuntimeError, TypeError, ValueError, NotImplementedError) as e:
            raise ValueError(
                "the losses function cannot be vmapped over slots (data-dependent Python control "
                "flow such as bool(tensor) or .item() is not allowed under torch.func.vmap); "
                f"pass a vmappable losses_fn. vmap said: {e}"
            ) from e
        if tuple(losses.shape) != (self.n_slots, self.n_tasks):
            raise ValueError(
                f"batched losses have shape {tuple(losses.shape)}, expected "
                f"({self.n_slots}, {self.n_tasks})"
            )
        all_grads = torch.autograd.grad(losses.sum(), self._leaves, allow_unused=True)
        # Parameters the losses never reach (e.g. the toy benchmark's placeholder heads) get no
        # gradient; torch.optim.Adam leaves them alone, so they are not trained here either.
        used = [(n, g) for n, g in zip(self._trainable, all_grads, strict=True) if g is not None]
        if not used:
            raise ValueError("no parameter of the model gets a gradient from the losses")
        self._trainable = [name for name, _ in used]
        self._orders: list[list[int]] = []
        for name, g in used:
            p = self._params[name]
            order = dense_order(g)
            if order is not None and g.stride() != p.stride():
                q = torch.empty_strided(p.shape, g.stride(), dtype=p.dtype, device=p.device)
                with torch.no_grad():
                    q.copy_(p)
                self._params[name] = q.requires_grad_(p.requires_grad)
            self._orders.append(order if order is not None else list(range(p.dim())))
        self._leaves = [self._params[name] for name in self._trainable]
        # Leaves the balancer combines (per-task gradients) and the heads' (one weighted pass).
        self._shared_idx = [k for k, n in enumerate(self._trainable) if n in self._shared_names]
        self._head_idx = [k for k, n in enumerate(self._trainable) if n not in self._shared_names]
        if self._balancer is not None and not self._shared_idx:
            raise ValueError("no shared parameter of the model gets a gradient from the losses")

    # -- properties -----------------------------------------------------------------------------
    @property
    def step_counts(self) -> Tensor:
        """Steps taken by each slot ``[N]`` (int64)."""
        return torch.from_numpy(self._steps.copy())

    @property
    def diverged(self) -> Tensor:
        """Slots whose loss became non-finite; frozen until ``reset_slot`` ``[N]`` (bool)."""
        return torch.from_numpy(self._dead.copy())

    @property
    def done(self) -> Tensor:
        """Slots whose step budget (``config.steps``) is spent ``[N]`` (bool)."""
        budgets = np.array([c.steps for c in self._configs])
        return torch.from_numpy(self._steps >= budgets)

    @property
    def epochs(self) -> Tensor:
        """Index of the epoch of each slot's next step ``[N]`` (int64)."""
        return torch.from_numpy(self._steps // self.steps_per_epoch)

    @property
    def lrs(self) -> Tensor:
        """Learning rate of each slot's next step ``[N]`` (float64)."""
        return torch.tensor(self._lrs(), dtype=torch.float64)

    @property
    def seeds(self) -> tuple[int, ...]:
        """Seed of each slot."""
        return tuple(self._seeds)

    @property
    def benchmarks(self) -> tuple[Benchmark, ...]:
        """Benchmark of each slot."""
        return tuple(self._benchmarks)

    @property
    def configs(self) -> tuple[TrainConfig, ...]:
        """Training config of each slot."""
        return tuple(self._configs)

    def _lrs(self) -> list[float]:
        # LambdaLR's arithmetic: base_lr * factor(step), in Python floats.
        return [
            c.lr * lr_factor(c, int(s)) for c, s in zip(self._configs, self._steps, strict=True)
        ]

    def _detached_params(self) -> dict[str, Tensor]:
        return {name: p.detach() for name, p in self._params.items()}

    def model_state_dict(self, i: int) -> dict[str, Tensor]:
        """Slot ``i``'s parameters as a ``state_dict`` of ``benchmark.build_model()`` (copies)."""
        return {
            name: p.detach()[i].clone(memory_format=torch.contiguous_format)
            for name, p in self._params.items()
        }

    # -- the two phases -------------------------------------------------------------------------
    def _next_batch(self, active: np.ndarray, draw: bool = True) -> tuple[Tensor, Tensor]:
        n, bs = self.n_slots, self.batch_size
        pos = (self._steps % self.steps_per_epoch) * bs
        # A slot that does not step this time keeps its batch order untouched; ``draw=False``
        # gathers the batch of a restored pending step, whose order was drawn before saving.
        redraw = ((pos == 0) | ~self._has_perm) & active if draw else ~self._has_perm & active
        for i in np.flatnonzero(redraw):
            perm = torch.randperm(self.n_train, generator=self._generators[i])
            self._perm[i].copy_(perm)
            self._has_perm[i] = True
        start = torch.from_numpy(pos).to(self.device)
        idx = self._perm.gather(1, start[:, None] + self._batch_arange)
        flat = (idx + self._row_offsets).view(-1)
        x = self._x.view(n * self.n_train, *self._x.shape[2:]).index_select(0, flat)
        y = self._y.view(n * self.n_train, *self._y.shape[2:]).index_select(0, flat)
        return x.view(n, bs, *x.shape[1:]), y.view(n, bs, *y.shape[1:])

    def forward(self, active: Tensor | np.ndarray | Sequence[bool] | None = None) -> Tensor:
        """Draw the next batch of every stepping slot and compute the raw losses.

        Slots with a non-finite loss are marked diverged (see ``diverged``); they are not
        updated by ``apply`` until reset.

        Args:
            active: Slots that take this step ``[N]`` (default: all); the others (e.g. slots
                that wait while another one runs its base window) keep their batch order,
                parameters, optimizer state and step count. Their losses are computed on their
                current batch position but not absorbed.

        Returns:
            Raw batch losses ``[N, T]`` (a detached copy).

        Raises:
            RuntimeError: Called twice without ``apply``.
            ValueError: Under the ``log`` transform, a finite loss below its lower bound.
        """
        if self._pending is not None:
            raise RuntimeError("forward() called twice without apply() in between")
        mask = np.ones(self.n_slots, dtype=bool) if active is None else np.asarray(active, bool)
        if mask.shape != (self.n_slots,):
            raise ValueError(f"active must have shape ({self.n_slots},), got {mask.shape}")
        stepping = mask & ~self._dead
        x, y = self._next_batch(stepping)
        with torch.enable_grad():
            losses = self._batched_losses(self._params, x, y)
        raw = losses.detach()
        finite = torch.isfinite(raw)
        bad = ~finite.all(dim=1)
        if self.transform == "log":
            live = torch.from_numpy(stepping).to(self.device)[:, None]
            below = finite & live & (raw - self._lower < 0)
            if bool(below.any()):
                i, t = (int(k) for k in torch.nonzero(below)[0])
                raise ValueError(
                    f"log transform: slot {i} task {t} loss {float(raw[i, t]):.6g} is below its "
                    f"lower bound L*={float(self._lower[i, t]):.6g}; the log transform needs "
                    "L >= L*"
                )
        self._dead |= (bad.cpu().numpy() | self._exploded(raw, finite, stepping)) & stepping
        self._pending = losses
        self._pending_active = stepping
        return raw.clone()

    def _exploded(self, raw: Tensor, finite: Tensor, stepping: np.ndarray) -> np.ndarray:
        """Slots with a finite loss far above its first-step value ``[N]`` (records first steps)."""
        first = stepping & ~self._has_margin & finite.all(dim=1).cpu().numpy()
        for slot in np.flatnonzero(first).tolist():
            self._set_margin(slot, raw[slot].to("cpu", torch.float64) - self._lower[slot].cpu())
        over = (finite & (raw > self._limit)).any(dim=1).cpu().numpy()
        return over & ~first

    def _set_margin(self, i: int, margin: Tensor) -> None:
        factor = self._configs[i].divergence_factor
        self._first_margin[i] = margin
        self._has_margin[i] = True
        if factor is None:
            self._limit[i] = torch.inf
            return
        limit = explosion_limit(self._lower[i], margin, factor)
        self._limit[i] = limit.to(device=self.device, dtype=self._limit.dtype)

    def apply(self, weights: Tensor | Sequence[Sequence[float]] | np.ndarray) -> StackedStepResult:
        """Finish the step on the batches of the last ``forward``.

        Minimises ``Σ_t w_it · transform(L_it)`` for every slot ``i`` that stepped in the last
        ``forward`` and has not diverged, with Adam.

        Args:
            weights: Task weights ``[N, T]``; rows of other slots are ignored.

        Returns:
            The step's raw losses, the weights, learning rates and the slots updated.

        Raises:
            RuntimeError: Called without ``forward`` first.
            ValueError: Weights of the wrong shape, or non-finite weights for a live slot.
        """
        if self._pending is None:
            raise RuntimeError("apply() needs forward() first")
        w = torch.as_tensor(weights, dtype=torch.float32).detach().to(self.device)
        if tuple(w.shape) != (self.n_slots, self.n_tasks):
            raise ValueError(
                f"weights must have shape ({self.n_slots}, {self.n_tasks}), got {tuple(w.shape)}"
            )
        live_np = self._pending_active & ~self._dead
        live = torch.from_numpy(live_np).to(self.device)[:, None]
        bad_rows = ~(torch.isfinite(w) | ~live).all(dim=1)
        if bool(bad_rows.any()):
            bad = torch.nonzero(bad_rows).flatten().tolist()
            raise ValueError(
                f"weights of live slots must be finite; slot(s) {bad} got {w[bad_rows].tolist()}"
            )
        losses, self._pending = self._pending, None
        lrs = self._lrs()
        slots = [int(i) for i in np.flatnonzero(live_np)]
        step_before = self._steps.copy()
        if slots:
            with torch.enable_grad():
                # Diverged rows are replaced by L* + 1 (finite under both transforms) and get
                # weight 0; their gradients are never applied.
                safe = (
                    losses
                    if len(slots) == self.n_slots
                    else torch.where(live, losses, self._lower + 1.0)
                )
                if self.transform == "log":
                    transformed = torch.log(safe - self._lower + self._log_eps)
                else:
                    transformed = safe
                w_live = w if len(slots) == self.n_slots else torch.where(live, w, 0.0)
                if self._balancers:
                    grads = self._balanced_grads(transformed, w_live, losses.detach(), slots)
                else:
                    objective = (w_live * transformed).sum()
                    grads = list(torch.autograd.grad(objective, self._leaves))
            self._steps[slots] += 1
            weight_decays = [c.weight_decay for c in self._configs]
            self.adam.step(grads, slots, lrs, weight_decays, [int(s) for s in self._steps])
        raw = losses.detach()
        return StackedStepResult(
            step=torch.from_numpy(step_before),
            losses=raw.cpu().clone(),
            weights=w.cpu(),
            lr=torch.tensor(lrs, dtype=torch.float64),
            updated=torch.from_numpy(live_np.copy()),
            diverged=torch.from_numpy(self._dead.copy()),
        )

    def _balanced_grads(
        self, transformed: Tensor, weights: Tensor, losses: Tensor, slots: list[int]
    ) -> list[Tensor]:
        """Every leaf's gradient under the slots' balancers (``JacobianUpdate`` per slot).

        Shared parameters get each slot's balancer direction from its Jacobian ``[T, P]``, the
        heads ``∇ Σ_t w_t h_t transform(L_t)`` (``h``: the balancer's head scales, 1 by default)
        in a second reverse pass, which reaches the heads only (cheaper than T per-task head
        gradients). Slots that do not step get zero gradients and leave their balancer untouched.
        """
        n_tasks, n_slots = self.n_tasks, self.n_slots
        shared = [self._leaves[k] for k in self._shared_idx]
        if self._jacobian_method == "batched":
            # Batch entry t seeds the backward pass with task t of every slot at once.
            eye = torch.eye(n_tasks, dtype=transformed.dtype, device=transformed.device)
            seeds = eye[:, None, :].expand(n_tasks, n_slots, n_tasks)
            per_task = torch.autograd.grad(
                transformed, shared, grad_outputs=seeds, retain_graph=True, is_grads_batched=True
            )
        else:
            rows = [
                torch.autograd.grad(transformed[:, t].sum(), shared, retain_graph=True)
                for t in range(n_tasks)
            ]
            per_task = tuple(torch.stack(g) for g in zip(*rows, strict=True))
        # Every slot's Jacobian of the shared parameters, [T, N, P]; slot i's is a view.
        jacobians = torch.cat([g.reshape(n_tasks, n_slots, -1) for g in per_task], dim=2)
        directions = jacobians.new_zeros(n_slots, jacobians.shape[2])
        head_weights = weights.clone()
        for i in slots:
            balancer = self._balancers[i]
            directions[i] = balancer(jacobians[:, i], weights[i], losses[i])
            scales = balancer.head_scales()
            if scales is not None:
                head_weights[i] = weights[i] * scales.to(weights)
        grads: list[Tensor] = [torch.empty(0)] * len(self._leaves)
        offset = 0
        for k, leaf in zip(self._shared_idx, shared, strict=True):
            size = leaf[0].numel()
            grads[k] = directions[:, offset : offset + size].reshape(leaf.shape)
            offset += size
        if self._head_idx:
            heads = [self._leaves[k] for k in self._head_idx]
            head_grads = torch.autograd.grad((head_weights * transformed).sum(), heads)
            for k, g in zip(self._head_idx, head_grads, strict=True):
                grads[k] = g
        return grads

    def step(self, weights: Tensor | Sequence[Sequence[float]] | np.ndarray) -> StackedStepResult:
        """``forward()`` then ``apply(weights)``."""
        self.forward()
        return self.apply(weights)

    # -- validation -----------------------------------------------------------------------------
    def validation_losses(self, n: int | None = None) -> Tensor:
        """Per-task losses of each slot on its first ``n`` validation rows (no gradient).

        Args:
            n: Rows (default: the whole validation split).

        Returns:
            Losses ``[N, T]``, as ``benchmark.losses`` on the slot model's outputs.
        """
        return self.validation(n, metrics=False)[0]

    def validation(
        self, n: int | None = None, metrics: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Losses ``[N, T]`` and, with ``metrics``, every slot's metrics ``[N, M]`` (no gradient).

        One forward pass serves both: the metrics are each slot benchmark's ``metrics`` (in
        ``metric_specs`` order, float64) on the slot's outputs for its first ``n`` validation
        rows, as a single trainer's benchmark computes them on the same outputs.
        """
        n = self.n_val if n is None else n
        if not 1 <= n <= self.n_val:
            raise ValueError(f"n must lie in [1, {self.n_val}], got {n}")
        chunk = self._reference_config.eval_batch_size
        params = self._detached_params()
        with torch.no_grad():
            pieces = [
                self._batched_outputs(params, self._val_x[:, start : min(start + chunk, n)])
                for start in range(0, n, chunk)
            ]
            outputs = [torch.cat([p[t] for p in pieces], dim=1) for t in range(len(pieces[0]))]
            losses: Tensor = self._batched_losses_of_outputs(outputs, self._val_y[:, :n])
            values = None
            if metrics:
                rows = []
                for i, bench in enumerate(self._benchmarks):
                    got = bench.metrics([o[i] for o in outputs], self._val_y[i, :n])
                    rows.append([got[m.name] for m in bench.metric_specs])
                values = torch.tensor(rows, dtype=torch.float64)
        return losses, values

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit for bit.

        Parameters, Adam state, step counts, divergence flags, batch orders, data generators,
        each slot's seed, config, benchmark (registry name and ``config()``) and balancer state,
        and, between ``forward()`` and ``apply()``, which slots' batch is pending
        (``load_state_dict`` recomputes its losses from the restored parameters: bit for bit the
        same).
        """
        return {
            "pending": None
            if self._pending is None
            else torch.from_numpy(self._pending_active.copy()),
            "transform": self.transform,
            "params": {name: p.detach().clone() for name, p in self._params.items()},
            "adam": self.adam.state_dict(),
            "step_count": torch.from_numpy(self._steps.copy()),
            "diverged": torch.from_numpy(self._dead.copy()),
            "first_margin": self._first_margin.clone(),
            "has_margin": torch.from_numpy(self._has_margin.copy()),
            "perm": self._perm.cpu().clone(),
            "has_perm": torch.from_numpy(self._has_perm.copy()),
            "data_generators": [g.get_state() for g in self._generators],
            "seeds": list(self._seeds),
            "configs": [dataclasses.asdict(c) for c in self._configs],
            "benchmarks": [{"name": b.name, "config": b.config()} for b in self._benchmarks],
            "balancers": [b.state_dict() for b in self._balancers],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned.

        A slot whose benchmark, seed or config differs from the saved one (e.g. it was reset
        after the trainer was built) is refilled first, rebuilding its benchmark with
        ``make_benchmark(name, **config)``.

        Raises:
            ValueError: A different transform or slot count, or a benchmark that cannot be
                rebuilt.
        """
        if state["transform"] != self.transform:
            raise ValueError(
                f"state was saved with transform {state['transform']!r}, this trainer uses "
                f"{self.transform!r}"
            )
        if len(state["seeds"]) != self.n_slots:
            raise ValueError(f"state has {len(state['seeds'])} slots, trainer has {self.n_slots}")
        self._pending = None
        for i in range(self.n_slots):
            saved = state["benchmarks"][i]
            config = TrainConfig(**state["configs"][i])
            seed = int(state["seeds"][i])
            current = self._benchmarks[i]
            same_benchmark = current.name == saved["name"] and current.config() == saved["config"]
            if same_benchmark and seed == self._seeds[i] and config == self._configs[i]:
                continue
            if same_benchmark:
                benchmark = current
            elif saved["config"]:
                benchmark = make_benchmark(saved["name"], **saved["config"])
            else:
                raise ValueError(
                    f"slot {i}: benchmark {saved['name']!r} declares no config() to rebuild it; "
                    "reset_slot() it with the saved benchmark first"
                )
            self._install(i, benchmark, seed, config, build_model(benchmark, seed, self.device))
        with torch.no_grad():
            for name, p in self._params.items():
                p.copy_(state["params"][name])
            self._perm.copy_(state["perm"])
        self._steps[:] = state["step_count"].numpy()
        self.adam.load_state_dict(state["adam"])
        self._dead[:] = state["diverged"].numpy()
        # States saved before the explosion check have no margins: each slot's next step sets it.
        self._has_margin[:] = False
        self._limit.fill_(torch.inf)
        if "has_margin" in state:
            for slot in np.flatnonzero(state["has_margin"].numpy()).tolist():
                self._set_margin(slot, state["first_margin"][slot].to(torch.float64))
        self._has_perm[:] = state["has_perm"].numpy()
        for g, saved_g in zip(self._generators, state["data_generators"], strict=True):
            g.set_state(saved_g)
        saved_balancers = state.get("balancers", [])
        if len(saved_balancers) != len(self._balancers):
            raise ValueError(
                f"state has {len(saved_balancers)} balancer states, this trainer has "
                f"{len(self._balancers)} (was it saved with another balancer?)"
            )
        for balancer, saved_b in zip(self._balancers, saved_balancers, strict=True):
            balancer.load_state_dict(saved_b)
        pending = state.get("pending")
        if pending is not None:
            mask = pending.numpy().astype(bool)
            x, y = self._next_batch(mask, draw=False)
            with torch.enable_grad():
                self._pending = self._batched_losses(self._params, x, y)
            self._dead |= ~torch.isfinite(self._pending.detach()).all(dim=1).numpy() & mask
            self._pending_active = mask


__all__ = ["LossesFn", "StackedStepResult", "StackedTrainer", "check_stackable_config"]
