"""Adam over stacked parameters, one optimizer per slot: ``SlotAdam``.

Adam is elementwise, so Adam on parameters stacked along a leading slot axis is N independent
Adams, provided each slot keeps its own step count (bias correction) and learning rate (schedule
position): slots start at different times when they are reset independently.

Two implementations, chosen by ``impl``:

* ``foreach``: plain elementwise ops that reproduce ``torch.optim.Adam``'s single-tensor
  arithmetic (the CPU default, which ``MTLTrainer`` uses) bit for bit, on ranges of consecutive
  slots that share the weight decay;
* ``fused`` (faster): torch's fused Adam kernel (``torch._fused_adam_``, what
  ``torch.optim.Adam(fused=True)`` calls), handed each slot as its own tensors. The kernel rounds
  differently depending on a tensor's length (a vectorised body and a scalar tail), so a slot is
  always handed over alone: its result never depends on which other slots step with it. A torch
  without the kernel falls back to ``foreach``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

AdamImpl = Literal["fused", "foreach"]

BETA1 = 0.9
"""Adam's ``β1`` (``torch.optim.Adam``'s default, as ``MTLTrainer`` uses)."""
BETA2 = 0.999
"""Adam's ``β2``."""
ADAM_EPS = 1e-8
"""Adam's ``eps`` (``TrainConfig.eps`` is the log transform's, not Adam's)."""


def _runs(slots: Sequence[int], keys: Sequence[Any]) -> Iterator[tuple[int, int]]:
    """Maximal ``[start, stop)`` ranges of consecutive slots that share a key."""
    start = prev = -1
    for i in slots:
        if start >= 0 and (i != prev + 1 or keys[i] != keys[start]):
            yield start, prev + 1
            start = -1
        if start < 0:
            start = i
        prev = i
    if start >= 0:
        yield start, prev + 1


class SlotAdam:
    """Adam moments and per-slot steps for stacked parameters ``[N, ...]``.

    Args:
        leaves: The stacked trainable parameters (slot axis first).
        orders: For each leaf, the dimension order that makes a slot's slice contiguous (the
            layout autograd gives its gradient).
        impl: ``fused`` or ``foreach`` (see the module docstring).
    """

    def __init__(
        self, leaves: Sequence[Tensor], orders: Sequence[list[int]], impl: AdamImpl
    ) -> None:
        if impl not in ("fused", "foreach"):
            raise ValueError(f"adam must be 'fused' or 'foreach', got {impl!r}")
        self.impl: AdamImpl = impl if hasattr(torch, "_fused_adam_") else "foreach"
        self.leaves = list(leaves)
        self.orders = [list(o) for o in orders]
        self.n_slots = int(self.leaves[0].shape[0])
        device = self.leaves[0].device
        self.exp_avg = [torch.zeros_like(p, requires_grad=False) for p in self.leaves]
        self.exp_avg_sq = [torch.zeros_like(p, requires_grad=False) for p in self.leaves]
        self._step = torch.zeros(self.n_slots, dtype=torch.float32, device=device)
        # Per-slot contiguous views for the fused kernel; these tensors are never reallocated.
        self._param_views = self._slot_views([p.detach() for p in self.leaves])
        self._exp_avg_views = self._slot_views(self.exp_avg)
        self._exp_avg_sq_views = self._slot_views(self.exp_avg_sq)
        self._step_views = [[self._step[i]] * len(self.leaves) for i in range(self.n_slots)]
        self._cache: dict[
            tuple[int, ...], tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]
        ] = {}

    def _slot_views(self, tensors: Sequence[Tensor]) -> list[list[Tensor]]:
        """``views[i][k]``: slot ``i`` of ``tensors[k]``, permuted to be contiguous."""
        per_tensor = [
            t.permute(order).unbind(0) for t, order in zip(tensors, self.orders, strict=True)
        ]
        return [[views[i] for views in per_tensor] for i in range(self.n_slots)]

    def reset_slot(self, i: int) -> None:
        """Zero slot ``i``'s moments (its step count is the caller's)."""
        with torch.no_grad():
            for m, v in zip(self.exp_avg, self.exp_avg_sq, strict=True):
                m[i].zero_()
                v[i].zero_()

    @torch.no_grad()
    def step(
        self,
        grads: Sequence[Tensor],
        slots: Sequence[int],
        lrs: Sequence[float],
        weight_decays: Sequence[float],
        steps: Sequence[int],
    ) -> None:
        """Update the parameters of ``slots`` (step counts already incremented).

        Args:
            grads: Gradients of the leaves ``[N, ...]``.
            slots: Slots to update (others are left alone).
            lrs: Learning rate of every slot (indexed by slot).
            weight_decays: Weight decay of every slot.
            steps: Step count of every slot after this step (1 for a slot's first step).
        """
        if self.impl == "fused":
            self._fused(grads, slots, lrs, weight_decays, steps)
        else:
            self._foreach(grads, slots, lrs, weight_decays, steps)

    def _fused(
        self,
        grads: Sequence[Tensor],
        slots: Sequence[int],
        lrs: Sequence[float],
        weight_decays: Sequence[float],
        steps: Sequence[int],
    ) -> None:
        # One fused kernel call per (lr, weight_decay) group over per-slot tensors: the kernel
        # reads one step count per tensor (per-slot bias correction).
        self._step.copy_(torch.tensor([float(s) for s in steps], dtype=torch.float32))
        matching = [
            g if g.stride() == p.stride() else torch.empty_like(p).copy_(g)
            for g, p in zip(grads, self.leaves, strict=True)
        ]
        grad_views = [
            g.permute(order).unbind(0) for g, order in zip(matching, self.orders, strict=True)
        ]
        groups: dict[tuple[float, float], list[int]] = {}
        for i in slots:
            groups.setdefault((lrs[i], weight_decays[i]), []).append(i)
        for (lr, weight_decay), members in groups.items():
            params, exp_avgs, exp_avg_sqs, step_list = self._state_lists(tuple(members))
            torch._fused_adam_(
                params,
                [g[i] for i in members for g in grad_views],
                exp_avgs,
                exp_avg_sqs,
                [],
                step_list,
                lr=lr,
                beta1=BETA1,
                beta2=BETA2,
                weight_decay=weight_decay,
                eps=ADAM_EPS,
                amsgrad=False,
                maximize=False,
            )

    def _state_lists(
        self, members: tuple[int, ...]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Per-slot parameter, moment and step views of ``members``, flattened (cached)."""
        lists = self._cache.get(members)
        if lists is None:
            if len(self._cache) >= 64:
                self._cache.clear()
            lists = (
                [p for i in members for p in self._param_views[i]],
                [m for i in members for m in self._exp_avg_views[i]],
                [v for i in members for v in self._exp_avg_sq_views[i]],
                [s for i in members for s in self._step_views[i]],
            )
            self._cache[members] = lists
        return lists

    def _foreach(
        self,
        grads: Sequence[Tensor],
        slots: Sequence[int],
        lrs: Sequence[float],
        weight_decays: Sequence[float],
        steps: Sequence[int],
    ) -> None:
        # torch.optim.Adam's single-tensor arithmetic, on ranges of consecutive slots that share
        # the weight decay; per-slot step sizes enter as [k, 1, ...] tensors.
        device = self.leaves[0].device
        for a, b in _runs(slots, weight_decays):
            s = [float(x) for x in steps[a:b]]
            neg_step_size = torch.tensor(
                [-(lr / (1 - BETA1**k)) for lr, k in zip(lrs[a:b], s, strict=True)],
                dtype=torch.float32,
                device=device,
            )
            bias_correction2_sqrt = torch.tensor(
                [(1 - BETA2**k) ** 0.5 for k in s], dtype=torch.float32, device=device
            )
            self._step[a:b] = torch.tensor(s)
            weight_decay = weight_decays[a]
            for p, g, m, v in zip(self.leaves, grads, self.exp_avg, self.exp_avg_sq, strict=True):
                shape = (b - a,) + (1,) * (p.dim() - 1)
                param, grad, exp_avg, exp_avg_sq = p.detach()[a:b], g[a:b], m[a:b], v[a:b]
                if weight_decay != 0:
                    grad = grad.add(param, alpha=weight_decay)
                exp_avg.lerp_(grad, 1 - BETA1)
                exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt.view(shape)).add_(ADAM_EPS)
                param.addcdiv_(exp_avg * neg_step_size.view(shape), denom)

    def state_dict(self) -> dict[str, Any]:
        """The moments (the step counts are the trainer's)."""
        return {
            "exp_avg": [m.clone() for m in self.exp_avg],
            "exp_avg_sq": [v.clone() for v in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        with torch.no_grad():
            for m, saved in zip(self.exp_avg, state["exp_avg"], strict=True):
                m.copy_(saved)
            for v, saved in zip(self.exp_avg_sq, state["exp_avg_sq"], strict=True):
                v.copy_(saved)


__all__ = ["ADAM_EPS", "BETA1", "BETA2", "AdamImpl", "SlotAdam"]
