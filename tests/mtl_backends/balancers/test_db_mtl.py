"""DB-MTL: the EMA over a short sequence, max-norm rescaling, state round trip."""

from __future__ import annotations

import io
import math

import torch

from mtl_backends.balancers import DBMTL

from ._inputs import generic, losses_for


def test_short_sequence_by_hand() -> None:
    jacs = [generic(3, 5, s) for s in range(4)]
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    balancer = DBMTL(beta=0.9, beta_sigma=0.5)
    balancer.reset(3)
    ema = torch.zeros(3, 5, dtype=torch.float64)
    for k, jac in enumerate(jacs, start=1):
        beta = 0.9 / math.sqrt(k)
        ema = beta * ema + (1 - beta) * jac
        norms = ema.norm(dim=1)
        expected = sum(
            float(w[t]) * float(norms.max()) / (float(norms[t]) + 1e-8) * ema[t] for t in range(3)
        )
        d = balancer(jac, w, losses_for(3))
        torch.testing.assert_close(d, expected)
    assert balancer.step == 4


def test_every_contribution_has_the_largest_norm() -> None:
    balancer = DBMTL()
    balancer.reset(3)
    contrib = balancer.contributions(generic(3, 8, 0), losses_for(3))
    norms = contrib.norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, float(norms.max())), rtol=1e-6, atol=0)


def test_constant_beta_is_libmtl_default() -> None:
    balancer = DBMTL(beta=0.9, beta_sigma=0.0)
    assert balancer.beta_k(1) == balancer.beta_k(100) == 0.9
    assert abs(DBMTL().beta_k(4) - 0.45) < 1e-12


def test_requires_log_transform() -> None:
    assert DBMTL.requires_transform == "log"


def test_state_round_trip_with_weights_only_load() -> None:
    jac = generic(3, 5, 0)
    w = torch.ones(3, dtype=torch.float64)
    a = DBMTL()
    a.reset(3)
    a(jac, w, losses_for(3))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = DBMTL()
    b.reset(3)
    b.load_state_dict(torch.load(buf, weights_only=True))
    jac2 = generic(3, 5, 1)
    assert torch.equal(a(jac2, w, losses_for(3)), b(jac2, w, losses_for(3)))
    a.reset(3)
    assert a.step == 0 and a.ema is None
