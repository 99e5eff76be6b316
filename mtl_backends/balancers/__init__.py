"""Gradient balancers: the ``GRADIENT_BALANCERS`` registry and ``make_balancer``."""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers._torchjd import TorchJDBalancer
from mtl_backends.balancers.aligned_mtl import AlignedMTL
from mtl_backends.balancers.base import WEIGHT_MODES, GradientBalancer
from mtl_backends.balancers.cagrad import CAGrad
from mtl_backends.balancers.conflict_free import ConFIG
from mtl_backends.balancers.db_mtl import DBMTL
from mtl_backends.balancers.dualproj import DualProj
from mtl_backends.balancers.fairgrad import FairGrad
from mtl_backends.balancers.gradvac import GradVac
from mtl_backends.balancers.imgrad import IMGrad
from mtl_backends.balancers.imtl_g import IMTLG
from mtl_backends.balancers.mgda import MGDA
from mtl_backends.balancers.nash_mtl import NashMTL
from mtl_backends.balancers.pcgrad import PCGrad
from mtl_backends.balancers.sum import Sum
from mtl_backends.balancers.torchjd_alternatives import TorchJDCAGrad, TorchJDMGDA, TorchJDPCGrad
from mtl_backends.balancers.upgrad import UPGrad
from mtl_backends.registry import build

GRADIENT_BALANCERS: dict[str, type[GradientBalancer]] = {
    "sum": Sum,
    "db_mtl": DBMTL,
    "imgrad": IMGrad,
    "mgda": MGDA,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    # Through TorchJD (``_torchjd.TorchJDBalancer``); torchjd_* are TorchJD's versions of ours.
    "nash_mtl": NashMTL,
    "imtl_g": IMTLG,
    "aligned_mtl": AlignedMTL,
    "upgrad": UPGrad,
    "dualproj": DualProj,
    "fairgrad": FairGrad,
    "gradvac": GradVac,
    "config": ConFIG,
    "torchjd_mgda": TorchJDMGDA,
    "torchjd_pcgrad": TorchJDPCGrad,
    "torchjd_cagrad": TorchJDCAGrad,
}


def make_balancer(name: str, **kwargs: Any) -> GradientBalancer:
    """Build the gradient balancer registered as ``name`` with constructor arguments ``kwargs``."""
    return build(GRADIENT_BALANCERS, "gradient balancer", name, kwargs)


__all__ = [
    "DBMTL",
    "GRADIENT_BALANCERS",
    "IMTLG",
    "MGDA",
    "WEIGHT_MODES",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "FairGrad",
    "GradVac",
    "GradientBalancer",
    "IMGrad",
    "NashMTL",
    "PCGrad",
    "Sum",
    "TorchJDBalancer",
    "TorchJDCAGrad",
    "TorchJDMGDA",
    "TorchJDPCGrad",
    "UPGrad",
    "make_balancer",
]
