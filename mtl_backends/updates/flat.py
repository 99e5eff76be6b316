"""The sharpness-aware "flat" update of Phan et al. around any balancer (F-MGDA, F-CAGrad, ...).

Not a balancer: an update rule the trainer chooses when ``TrainConfig.flat_rho`` is set, because
it re-runs forward passes at perturbed parameters.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.updates.base import LossFn, Parameters, StepInputs, UpdateRule
from mtl_backends.updates.jacobian import DEFAULT_JACOBIAN_METHOD, jacobian, write_grad


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[None]:
    """Run forward passes that leave every BatchNorm buffer (running stats, counter) unchanged.

    Normalisation still uses the batch statistics in training mode, as in SAM; only the running
    statistics are restored afterwards (a momentum of 0 would still advance the batch counter).
    """
    saved = [
        (module, {name: buf.clone() for name, buf in module.named_buffers(recurse=False)})
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in saved:
                for name, value in buffers.items():
                    getattr(module, name).copy_(value)


def perturbation(
    params: Sequence[Tensor], grads: Sequence[Tensor], rho: float, adaptive: bool = True
) -> list[Tensor]:
    """The (adaptive) SAM perturbation of one parameter block.

    ``ε = ρ (|θ|² ⊙ g) / ‖|θ| ⊙ g‖`` if ``adaptive`` (ASAM, the paper code's default), else
    ``ε = ρ g / ‖g‖``; the norm is over the whole block and ``1e-12`` is added to it. A zero
    gradient gives a zero perturbation.

    Args:
        params: Parameters of the block.
        grads: Their gradients (same shapes).
        rho: Radius ``ρ``.
        adaptive: Scale by ``|θ|`` (ASAM).

    Returns:
        One perturbation per parameter.
    """
    if adaptive:
        scaled = [p.detach().abs() * g for p, g in zip(params, grads, strict=True)]
        steps = [p.detach().abs() * s for p, s in zip(params, scaled, strict=True)]
    else:
        scaled = list(grads)
        steps = list(grads)
    norm = torch.sqrt(torch.stack([(s.double() ** 2).sum() for s in scaled]).sum()).to(steps[0])
    return [rho * s / (norm + 1e-12) for s in steps]


def _split(flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    out, offset = [], 0
    for p in params:
        out.append(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


class FlatUpdate(UpdateRule):
    """Task-based flat-region seeking (Phan et al.) around a gradient balancer.

    Paper: Phan, Tran, Tran, Ho, Le, Nguyen, "Beyond Losses Reweighting: Empowering Multi-Task
    Learning via the Generalization Perspective", ICCV 2025, https://arxiv.org/abs/2211.13723.

    Formula, per step, for each task ``i`` (``θ`` shared, ``ψ_i`` head ``i``, ``l_i`` the
    transformed loss): ``g_i = ∇_θ l_i``; per-task adaptive perturbations ``ε_θ^i``, ``ε_ψ^i``
    (``perturbation``, radius ``ρ`` for both); ``g_i^SAM = ∇_θ l_i(θ + ε_θ^i, ψ_i + ε_ψ^i)`` from a
    forward pass re-run at the perturbed parameters with BatchNorm statistics frozen; flat part
    ``g_i^flat = g_i^SAM - g_i``. The shared update is ``B_loss(J, w) + B_flat(J^flat, w)`` with
    two separate instances of the wrapped balancer (so DB-MTL's EMA or PCGrad's generator are not
    mixed); head ``i`` gets ``w_i h_i ∇_ψ l_i`` at its perturbed point; all parameters are restored
    before the optimiser step. Cost: ``T`` extra forward and backward passes and a second balancer
    call per step.

    ``ρ = 0`` is the wrapped balancer exactly: no perturbation means ``g^SAM = g``, so the flat part
    is zero, no extra pass is run, and the update is bit for bit the balancer's (the flat instance
    still sees the zero Jacobian, so its state advances as it would).

    Args:
        params: The parameter groups (``params.model`` must have a ``heads`` list; head ``i`` serves
            task ``i`` only).
        balancer: The run's balancer (it aggregates the loss part and keeps its identity, so its
            ``state_dict`` stays the trainer's ``balancer`` entry).
        loss_fn: Outputs and targets to transformed losses ``[T]`` (the step's transform).
        rho: Perturbation radius ``ρ`` (paper default 2.0 with adaptive perturbation).
        n_tasks: Number of tasks ``T``.
        seed: Seeds the flat instance's generator (independent of the loss instance's).
        method: ``batched`` or ``sequential`` per-task gradients.
        adaptive: ASAM-style perturbation (default, as the paper's code).

    State: the flat balancer instance's ``state_dict`` and generator state.
    """

    name = "flat"

    def __init__(
        self,
        params: Parameters,
        balancer: GradientBalancer,
        loss_fn: LossFn,
        rho: float = 2.0,
        n_tasks: int | None = None,
        seed: int = 0,
        method: str = DEFAULT_JACOBIAN_METHOD,
        adaptive: bool = True,
    ) -> None:
        if rho < 0 or not np.isfinite(rho):
            raise ValueError(f"flat rho must be finite and >= 0, got {rho}")
        super().__init__(params, balancer)
        self.loss_fn = loss_fn
        self.rho = float(rho)
        self.method = method
        self.adaptive = adaptive
        self.flat_balancer = copy.deepcopy(balancer)
        n = n_tasks if n_tasks is not None else int(getattr(balancer, "n_tasks", 0))
        flat_seed = int(np.random.SeedSequence([seed, 0xF1A7]).generate_state(1)[0])
        self.flat_balancer.reset(n, torch.Generator().manual_seed(flat_seed))

    def backward(self, step: StepInputs) -> None:
        """Write the flat update into ``.grad`` of the shared parameters, the heads and extras."""
        self._flat_grads(step.inputs, step.targets, step.transformed, step.weights, step.losses)
        if step.extra is not None:
            step.extra.backward(inputs=self.params.extra)

    def _flat_grads(
        self, inputs: Tensor, targets: Tensor, transformed: Tensor, weights: Tensor, losses: Tensor
    ) -> None:
        model, shared_params = self.params.model, self.params.shared
        heads = [[p for p in head.parameters() if p.requires_grad] for head in model.heads]
        head_params = [p for group in heads for p in group]
        jac = jacobian(transformed, shared_params, method=self.method)
        d_loss = self.balancer(jac, weights, losses)
        scales = self.balancer.head_scales()
        head_w = weights if scales is None else weights * scales.to(weights)
        if self.rho == 0.0:
            d_flat = self.flat_balancer(torch.zeros_like(jac), weights, losses)
            (head_w * transformed).sum().backward(inputs=head_params)
            write_grad(shared_params, d_loss + d_flat)
            return
        head_grads0 = torch.autograd.grad(transformed.sum(), head_params, retain_graph=True)
        per_head0 = _split_groups(list(head_grads0), heads)
        backup = [p.detach().clone() for p in (*shared_params, *head_params)]
        sam_rows: list[Tensor] = []
        head_grads: list[Tensor] = []
        try:
            for i, group in enumerate(heads):
                eps_shared = perturbation(
                    shared_params, _split(jac[i], shared_params), self.rho, self.adaptive
                )
                eps_head = perturbation(group, per_head0[i], self.rho, self.adaptive)
                block = [*shared_params, *group]
                with torch.no_grad():
                    for p, e in zip(block, [*eps_shared, *eps_head], strict=True):
                        p.add_(e)
                with frozen_batchnorm(model):
                    loss_i = self.loss_fn(model(inputs), targets)[i]
                grads = torch.autograd.grad(loss_i, block, allow_unused=True)
                flat_grads = [
                    torch.zeros_like(p) if g is None else g
                    for g, p in zip(grads, block, strict=True)
                ]
                n_shared = len(shared_params)
                sam_rows.append(torch.cat([g.reshape(-1) for g in flat_grads[:n_shared]]))
                head_grads.extend(head_w[i].to(g) * g for g in flat_grads[n_shared:])
                with torch.no_grad():
                    for p, b in zip((*shared_params, *head_params), backup, strict=True):
                        p.copy_(b)
        finally:
            with torch.no_grad():
                for p, b in zip((*shared_params, *head_params), backup, strict=True):
                    p.copy_(b)
        d_flat = self.flat_balancer(torch.stack(sam_rows) - jac, weights, losses)
        for p, g in zip(head_params, head_grads, strict=True):
            p.grad = g.detach().clone()
        write_grad(shared_params, d_loss + d_flat)

    def state_dict(self) -> dict[str, Any]:
        """The flat instance's state and generator state."""
        gen = getattr(self.flat_balancer, "generator", None)
        return {
            "balancer": self.flat_balancer.state_dict(),
            "generator": gen.get_state() if isinstance(gen, torch.Generator) else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.flat_balancer.load_state_dict(state["balancer"])
        gen = getattr(self.flat_balancer, "generator", None)
        if state["generator"] is not None and isinstance(gen, torch.Generator):
            gen.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"FlatUpdate({self.balancer!r}, rho={self.rho}, adaptive={self.adaptive})"


def _split_groups(grads: list[Tensor], groups: Sequence[Sequence[Tensor]]) -> list[list[Tensor]]:
    out, offset = [], 0
    for group in groups:
        out.append(grads[offset : offset + len(group)])
        offset += len(group)
    return out
