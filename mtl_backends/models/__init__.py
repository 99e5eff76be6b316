"""Model building blocks shared by the benchmarks."""

from mtl_backends.models.hps import HardParameterSharing, mlp

__all__ = ["HardParameterSharing", "mlp"]
