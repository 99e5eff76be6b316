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
    # Through TorchJD 0.18 (mtl_backends.balancers._torchjd).
    ("aligned_mtl", {}, [-1.091426426, 0.2010682255, 2.693111916, 1.105679013]),
    ("config", {}, [-1.10209702, 0.1798243732, 2.825137386, 1.157359521]),
    ("dualproj", {}, [-1.576239614, 0.415766283, 3.65914098, 1.323611363]),
    ("fairgrad", {}, [-2.481446294, 0.4390343656, 6.277855699, 2.534607688]),
    ("gradvac", {}, [-3.045475159, 1.07733184, 6.608494182, 1.953830506]),
    ("imtl_g", {}, [-1.062903952, 0.173429411, 2.724669098, 1.116201193]),
    ("nash_mtl", {}, [-1.432663685, 0.2534766086, 3.624521677, 1.463356431]),
    ("torchjd_cagrad", {}, [-1.670227597, 0.329772404, 3.840455194, 1.680910386]),
    ("torchjd_mgda", {}, [-1.077887515, 0.1885193953, 2.737662208, 1.104719639]),
    ("torchjd_pcgrad", {}, [-2.900339603, 0.6195966012, 6.82061541, 2.779986801]),
    ("upgrad", {}, [-3.412403109, 0.6233018985, 8.568844683, 3.447255731]),
]


def test_every_balancer_is_pinned() -> None:
    assert {name for name, _, _ in PINNED} == set(GRADIENT_BALANCERS)


@pytest.mark.parametrize(("name", "kwargs", "expected"), PINNED)
def test_pinned_value(name: str, kwargs: dict[str, Any], expected: list[float]) -> None:
    balancer = make_balancer(name, **kwargs)
    balancer.reset(3, torch.Generator().manual_seed(0))
    d = balancer(JACOBIAN, WEIGHTS, LOSSES)
    torch.testing.assert_close(d, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-8)
