"""Pinned outputs of every balancer on one small fixed input (guards against silent changes).

If a change of a balancer is intended, re-derive the row (and say why in the commit message).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mtl_backends.balancers import GRADIENT_BALANCERS, make_balancer

JACOBIAN = torch.tensor(
    [[1.0, -2.0, 0.5, 3.0], [-1.5, 1.0, 2.0, 0.0], [0.5, 0.5, -1.0, -2.0]], dtype=torch.float64
)
WEIGHTS = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
LOSSES = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)

PINNED: list[tuple[str, dict[str, Any], list[float]]] = [
    ("sum", {}, [-1.75, 0.25, 4, 2]),
    ("db_mtl", {}, [-0.2803499536, 0.1206345576, 0.5303060992, 0.1390369879]),
    ("mgda", {}, [-1.068267284, 0.1822389355, 2.725556841, 1.104281169]),
    ("mgda", {"normalize": "l2"}, [-0.3751731304, 0.06121536649, 0.9617262525, 0.3939854537]),
    ("pcgrad", {}, [-1.021393609, 0.1391822032, 4.211873728, 0.8950668207]),
    ("cagrad", {}, [-1.670227596, 0.3297724035, 3.840455193, 1.680910386]),
    ("imgrad", {}, [-3.055511082, 0.4985963108, 7.578818353, 3.247657486]),
    (
        "imgrad",
        {"variant": "released"},
        [-0.9697897518, 0.2497224433, 2.244457552, 0.8303785194],
    ),
]


def test_every_balancer_is_pinned() -> None:
    assert {name for name, _, _ in PINNED} == set(GRADIENT_BALANCERS)


@pytest.mark.parametrize(("name", "kwargs", "expected"), PINNED)
def test_pinned_value(name: str, kwargs: dict[str, Any], expected: list[float]) -> None:
    balancer = make_balancer(name, **kwargs)
    balancer.reset(3, torch.Generator().manual_seed(0))
    d = balancer(JACOBIAN, WEIGHTS, LOSSES)
    torch.testing.assert_close(d, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-8)
