"""Per-task gradients of the shared parameters, and the update rule that balances them.

``jacobian`` returns ``J[T, P]``: row ``t`` is the flattened gradient of ``losses[t]`` with respect
to ``params``. ``"batched"`` computes all rows in one vectorised backward pass
(``torch.autograd.grad(..., is_grads_batched=True)``); ``"sequential"`` loops over tasks and is kept
as the reference. Nothing is copied through the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.updates.base import Parameters, StepInputs, UpdateRule

JACOBIAN_METHODS: tuple[str, ...] = ("batched", "sequential")

# Measured by `igb perf` on the 2-core reference machine (synthetic model, batch 100; sequential
# time / batched time): at 1 thread 0.76 (T = 3) and 1.33 (T = 10), at 2 threads 1.9-3.0 for both.
# Batched wins except for few tasks on one thread (a ~0.6 ms loss per step), so it is the default;
# TrainConfig.jacobian defaults to the same value (a test checks it).
DEFAULT_JACOBIAN_METHOD = "batched"


def _flatten(
    grads: Sequence[Tensor | None], params: Sequence[Tensor], lead: tuple[int, ...]
) -> Tensor:
    parts = [
        (
            torch.zeros(*lead, p.numel(), dtype=p.dtype, device=p.device)
            if g is None
            else g.reshape(*lead, -1)
        )
        for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(parts, dim=-1)


def jacobian(
    losses: Tensor,
    params: Sequence[Tensor],
    method: str = DEFAULT_JACOBIAN_METHOD,
    retain_graph: bool = True,
) -> Tensor:
    """The Jacobian ``[T, P]`` of ``losses [T]`` w.r.t. ``params`` (flattened, concatenated).

    Args:
        losses: Differentiable task losses ``[T]``.
        params: Parameters to differentiate (``P`` = total number of elements).
        method: ``"batched"`` or ``"sequential"``.
        retain_graph: Keep the graph (the trainer still needs it for the heads).
    """
    if method not in JACOBIAN_METHODS:
        raise ValueError(
            f"unknown jacobian method {method!r}; valid choices: {', '.join(JACOBIAN_METHODS)}"
        )
    n_tasks = int(losses.shape[0])
    if method == "batched":
        eye = torch.eye(n_tasks, dtype=losses.dtype, device=losses.device)
        grads = torch.autograd.grad(
            losses,
            list(params),
            grad_outputs=eye,
            retain_graph=retain_graph,
            is_grads_batched=True,
            allow_unused=True,
        )
        return _flatten(grads, params, (n_tasks,))
    rows = []
    for t in range(n_tasks):
        keep = retain_graph or t < n_tasks - 1
        grads = torch.autograd.grad(losses[t], list(params), retain_graph=keep, allow_unused=True)
        rows.append(_flatten(grads, params, ()))
    return torch.stack(rows)


def write_grad(params: Sequence[Tensor], direction: Tensor) -> None:
    """Write the flat ``direction [P]`` into ``p.grad`` of each parameter (replacing it)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = direction[offset : offset + n].view_as(p).clone()
        offset += n
    if offset != direction.numel():
        raise ValueError(f"direction has {direction.numel()} entries, parameters have {offset}")


class JacobianUpdate(UpdateRule):
    """Per-task gradients of the shared parameters, combined by the balancer.

    The balancer turns the unweighted Jacobian and the weights into the shared update ``d``; the
    heads get ``∇ Σ_t w_t h_t l_t`` (``h_t``: the balancer's head scales, 1 by default) plus the
    weighting's extra term.

    Args:
        params: The parameter groups.
        balancer: The run's gradient balancer (``needs_jacobian = True``).
        method: ``batched`` or ``sequential`` per-task gradients.
    """

    name = "jacobian"

    def __init__(
        self, params: Parameters, balancer: GradientBalancer, method: str = DEFAULT_JACOBIAN_METHOD
    ) -> None:
        super().__init__(params, balancer)
        self.method = method

    def backward(self, step: StepInputs) -> None:
        """Shared parameters get the balancer's direction, heads their weighted gradients."""
        p = self.params
        jac = jacobian(step.transformed, p.shared, method=self.method)
        direction = self.balancer(jac, step.weights, step.losses)
        scales = self.balancer.head_scales()
        head_w = step.weights if scales is None else step.weights * scales.to(step.weights)
        head_objective = (head_w * step.transformed).sum()
        if step.extra is not None:
            head_objective = head_objective + step.extra
        head_inputs = p.task + p.extra
        if head_inputs:  # a model without task parameters (e.g. the toy landscape)
            head_objective.backward(inputs=head_inputs)
        write_grad(p.shared, direction)
