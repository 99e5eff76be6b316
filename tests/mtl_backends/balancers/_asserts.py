"""One helper per mathematical property of a balancer; each docstring states the property.

Helpers take a balancer *factory* where a fresh, reset instance per call is needed (stateful
balancers such as DB-MTL would otherwise carry state between the compared calls).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mtl_backends.balancers import GradientBalancer

Factory = Callable[[], GradientBalancer]


def fresh(factory: Factory, n_tasks: int) -> GradientBalancer:
    """A new balancer reset for ``n_tasks`` tasks with a generator seeded 0."""
    balancer = factory()
    balancer.reset(n_tasks, torch.Generator().manual_seed(0))
    return balancer


def direction(factory: Factory, jac: Tensor, weights: Tensor, losses: Tensor) -> Tensor:
    """``d`` of a fresh balancer on one input."""
    return fresh(factory, jac.shape[0])(jac, weights, losses)


def assert_finite(d: Tensor) -> None:
    """Every entry of the direction is finite (no NaN/inf), whatever the input."""
    assert bool(torch.isfinite(d).all()), f"non-finite direction: {d}"


def assert_on_simplex(w: Tensor, atol: float = 1e-8) -> None:
    """Weights are non-negative and sum to 1."""
    assert bool((w >= -atol).all()), f"negative simplex weight: {w}"
    assert abs(float(w.sum()) - 1.0) <= 1e-6, f"simplex weights sum to {float(w.sum())}"


def assert_non_conflicting(jac: Tensor, d: Tensor, rtol: float = 1e-6) -> None:
    """``J d >= 0``: no task's loss increases to first order along ``d`` (up to ``rtol``)."""
    scale = float(jac.norm(dim=1).max()) * max(float(d.norm()), 1e-300)
    worst = float((jac @ d).min())
    assert worst >= -rtol * scale, f"J d has a negative entry {worst} (scale {scale})"


def assert_permutation_equivariant(
    factory: Factory, jac: Tensor, weights: Tensor, losses: Tensor, rtol: float = 1e-5
) -> None:
    """Permuting the tasks (rows of ``J``, weights and losses together) leaves ``d`` unchanged."""
    perm = torch.arange(jac.shape[0] - 1, -1, -1)
    d = direction(factory, jac, weights, losses)
    d_perm = direction(factory, jac[perm], weights[perm], losses[perm])
    tol = rtol * max(float(d.norm()), float(jac.norm()) * 1e-3, 1e-300)
    assert float((d - d_perm).norm()) <= tol, (
        f"d changed under permutation by {(d - d_perm).norm()}"
    )


def assert_positively_homogeneous(
    factory: Factory, jac: Tensor, weights: Tensor, losses: Tensor, scale: float, rtol: float = 1e-5
) -> None:
    """``d(sJ) = s d(J)`` for ``s > 0``: the balancer commutes with a rescaling of all gradients."""
    d = direction(factory, jac, weights, losses)
    d_scaled = direction(factory, scale * jac, weights, losses)
    err = float((d_scaled - scale * d).norm())
    assert err <= rtol * scale * max(float(d.norm()), 1e-300), f"d(sJ) != s d(J): error {err}"


def _cos(a: Tensor, b: Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    return 0.0 if na == 0.0 or nb == 0.0 else float(a @ b) / (na * nb)


def assert_weights_change_direction(
    factory: Factory, jac: Tensor, losses: Tensor, factor: float = 2.0
) -> None:
    """Weights act after the balancer: for a generic ``J``, multiplying ``w_t`` by ``factor`` turns
    ``d`` (changes its direction) for every task whose contribution is non-zero, as long as some
    other task contributes too."""
    n = jac.shape[0]
    ones = torch.ones(n, dtype=jac.dtype)
    balancer = fresh(factory, n)
    contrib = balancer.contributions(jac, losses)
    norms = contrib.norm(dim=1)
    active = [t for t in range(n) if float(norms[t]) > 1e-6 * float(norms.max())]
    if len(active) < 2:
        return
    d = direction(factory, jac, ones, losses)
    for t in active:
        w = ones.clone()
        w[t] = factor
        d_t = direction(factory, jac, w, losses)
        assert _cos(d, d_t) < 1.0 - 1e-9, f"raising w_{t} did not change the direction of d"


def assert_raising_weight_never_hurts(
    factory: Factory, jac: Tensor, losses: Tensor, weights: Tensor, delta: float = 0.5
) -> None:
    """For a coefficient balancer (contribution ``c_t g_t`` with ``c_t >= 0``), raising ``w_t``
    never lowers ``cos(g_t, d)``."""
    n = jac.shape[0]
    d = direction(factory, jac, weights, losses)
    for t in range(n):
        w = weights.clone()
        w[t] = w[t] + delta
        d_t = direction(factory, jac, w, losses)
        before, after = _cos(jac[t], d), _cos(jac[t], d_t)
        assert after >= before - 1e-9, f"raising w_{t}: cos(g_t, d) fell from {before} to {after}"
