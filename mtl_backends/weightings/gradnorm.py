"""GradNorm: learnable weights that balance the tasks' gradient norms by their training rates."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mtl_backends.weightings.base import LossWeighting, StepContext

GRADNORM_LAYERS: tuple[str, ...] = ("last", "all")


class GradNorm(LossWeighting):
    """GradNorm: weights that give slower-training tasks proportionally larger gradient norms.

    Paper: Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient Normalization for Adaptive
    Loss Balancing in Deep Multitask Networks", ICML 2018, https://arxiv.org/abs/1711.02257, Alg. 1
    (its §4 regression problem is the ``synthetic`` benchmark).

    Formula: learnable weights ``w_t`` (initialised at 1) on the raw losses, objective
    ``Σ_t w_t L_t``. At every step it decides, with ``W`` the last shared layer's weight matrix
    (``layer="last"``, the paper's; ``"all"``: every shared parameter, as LibMTL),
    ``G_t = w_t ‖∇_W L_t‖``, ``Ḡ = mean_t G_t``, ``r_t = L̃_t / mean_s L̃_s`` with
    ``L̃_t = L_t / L_t(0)`` (``L(0)``: the first step's losses), and
    ``L_grad = Σ_t |G_t − Ḡ · r_t^α|`` with the target ``Ḡ r_t^α`` held constant. ``L_grad`` is the
    ``extra_loss``: the norms ``‖∇_W L_t‖`` are computed without a graph, so its gradient reaches
    ``w`` only (the model gets ``Σ_t w_t ∇L_t`` once, see ``LossWeighting``), and the run's
    optimizer updates ``w``; after each step ``w`` is renormalised to sum to ``T`` (weights below
    1e-6 are raised to it first, so that an overshooting step cannot make a weight negative; the
    paper does not say what it does there). Cost: ``T`` backward passes down to ``W`` per step.

    Args:
        alpha: Asymmetry ``α`` (default 1.5, the paper's NYUv2 setting and LibMTL's default; the
            paper used 0.12 on its synthetic regression benchmark).
        layer: ``"last"`` (default) or ``"all"``.

    State: ``w`` (a parameter) and ``L(0)``, in ``state_dict``.
    """

    label = "GradNorm"

    transform = "identity"

    def __init__(self, alpha: float = 1.5, layer: str = "last") -> None:
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"GradNorm alpha must be >= 0 and finite, got {alpha}")
        if layer not in GRADNORM_LAYERS:
            raise ValueError(
                f"unknown GradNorm layer {layer!r}; valid choices: {', '.join(GRADNORM_LAYERS)}"
            )
        self.alpha = float(alpha)
        self.layer = layer
        self.task_weights = nn.Parameter(torch.ones(0))
        self.initial_losses: Tensor | None = None
        self._shared: tuple[Tensor, ...] = ()
        self._losses: Tensor | None = None

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """``w = 1`` (a new parameter: build the optimizer after this) and no ``L(0)``."""
        super().reset(n_tasks, generator)
        self.task_weights = nn.Parameter(torch.ones(n_tasks))
        self.initial_losses = None
        self._shared = ()

    def parameters(self) -> list[nn.Parameter]:
        """The weights ``w``."""
        return [self.task_weights]

    def _layer(self, shared: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.layer == "all":
            return shared
        matrices = [p for p in shared if p.dim() >= 2]
        if not matrices:
            raise ValueError(
                "GradNorm layer='last' needs a shared weight matrix (a parameter with >= 2 "
                "dimensions); the model's shared parameters have none: use layer='all'"
            )
        return (matrices[-1],)

    def __call__(self, context: StepContext) -> Tensor:
        """The current ``w`` (detached); remembers ``L(0)`` and this step's ``W``."""
        if self.initial_losses is None:
            self.initial_losses = context.losses.detach().to("cpu", torch.float64).clone()
        self._shared = self._layer(tuple(context.shared_parameters))
        self._losses = context.losses.detach().to("cpu", torch.float64)
        return self.task_weights.detach().clone()

    def extra_loss(self, losses: Tensor) -> Tensor | None:
        """``L_grad`` of the step the weighting decided (``None`` when it did not decide)."""
        shared, self._shared = self._shared, ()
        if not shared or self.initial_losses is None or self._losses is None:
            return None
        norms = []
        for t in range(int(losses.shape[0])):
            grads = torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True)
            sq = sum(
                (float((g.detach().to(torch.float64) ** 2).sum()) for g in grads if g is not None),
                0.0,
            )
            norms.append(math.sqrt(sq))
        w = self.task_weights
        g_norm = w * torch.tensor(norms, dtype=w.dtype)
        ratio = self._losses / self.initial_losses.clamp_min(1e-300)
        rate = ratio / ratio.mean().clamp_min(1e-300)
        target = (g_norm.detach().mean() * rate.to(w.dtype) ** self.alpha).detach()
        return (g_norm - target).abs().sum()

    def after_step(self, context: StepContext) -> None:
        """Renormalise ``w`` to sum to ``T``."""
        with torch.no_grad():
            w = self.task_weights.clamp_min(1e-6)
            self.task_weights.copy_(w * (w.numel() / w.sum()))

    def state_dict(self) -> dict[str, Any]:
        """``w`` and ``L(0)``."""
        return {
            "task_weights": self.task_weights.detach().clone(),
            "initial_losses": None if self.initial_losses is None else self.initial_losses.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``w`` in place and ``L(0)``."""
        with torch.no_grad():
            self.task_weights.copy_(state["task_weights"])
        loaded = state["initial_losses"]
        self.initial_losses = None if loaded is None else loaded.clone()

    def __repr__(self) -> str:
        return f"GradNorm(alpha={self.alpha}, layer={self.layer!r})"


__all__ = ["GRADNORM_LAYERS", "GradNorm"]
