"""Update rules: how a training step turns weighted losses into gradients (chosen once per run).

``make_update_rule`` picks ``FlatUpdate`` when the config sets ``flat_rho``, ``JacobianUpdate``
when the balancer needs per-task gradients, and ``SumUpdate`` otherwise; the trainer never looks at
which one it got.
"""

from __future__ import annotations

from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.config import TrainConfig
from mtl_backends.updates.base import LossFn, Parameters, StepInputs, UpdateRule
from mtl_backends.updates.flat import FlatUpdate
from mtl_backends.updates.jacobian import JacobianUpdate, jacobian, write_grad
from mtl_backends.updates.sum import SumUpdate


def make_update_rule(
    params: Parameters,
    balancer: GradientBalancer,
    config: TrainConfig,
    loss_fn: LossFn,
    n_tasks: int,
    seed: int,
) -> UpdateRule:
    """The update rule of a run.

    Args:
        params: The parameter groups.
        balancer: The run's balancer (reset already).
        config: Training settings (``flat_rho``, ``jacobian``).
        loss_fn: Outputs and targets to transformed losses (the flat rule re-runs forwards).
        n_tasks: Number of tasks.
        seed: The run's seed (the flat rule seeds its second balancer from it).
    """
    if config.flat_rho is not None:
        return FlatUpdate(
            params, balancer, loss_fn, config.flat_rho, n_tasks, seed, method=config.jacobian
        )
    if balancer.needs_jacobian:
        return JacobianUpdate(params, balancer, method=config.jacobian)
    return SumUpdate(params, balancer)


__all__ = [
    "FlatUpdate",
    "JacobianUpdate",
    "LossFn",
    "Parameters",
    "StepInputs",
    "SumUpdate",
    "UpdateRule",
    "jacobian",
    "make_update_rule",
    "write_grad",
]
