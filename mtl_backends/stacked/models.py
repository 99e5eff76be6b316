"""What can be stacked: models whose training forward is a pure function of parameters and input.

``build_model`` draws a slot's initial model exactly as ``MTLTrainer`` draws it for the same seed;
``check_stackable`` refuses layers with running statistics or randomness.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl_backends.benchmarks import Benchmark
from mtl_backends.trainer import trainer_seeds

_REFUSED_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*: running stats
    nn.modules.dropout._DropoutNd,  # Dropout*, AlphaDropout, FeatureAlphaDropout: randomness
    nn.RReLU,  # random slopes in training mode
)


def build_model(benchmark: Benchmark, seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """The initial model of an ``MTLTrainer`` run with ``seed``, drawn exactly as it draws it."""
    s_init = trainer_seeds(seed).init
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s_init)
        model: nn.Module = benchmark.build_model().to(device)
    return model


def check_stackable(model: nn.Module) -> None:
    """Refuse models whose training forward is not a pure function of parameters and input.

    Raises:
        ValueError: The model has a normalisation layer with running statistics (BatchNorm,
            InstanceNorm), a random layer (Dropout, RReLU) or any buffer.
    """
    for name, module in model.named_modules():
        if isinstance(module, _REFUSED_MODULES):
            raise ValueError(
                f"StackedTrainer does not support {type(module).__name__} (module "
                f"{name or '<root>'!r}): only stateless, deterministic layers (Linear, ReLU, "
                "Tanh, ...) can be stacked; BatchNorm keeps running statistics and Dropout draws "
                "random masks"
            )
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        raise ValueError(f"StackedTrainer does not support models with buffers, got {buffers}")


def signature(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype, bool]]:
    """Name, shape, dtype and ``requires_grad`` of every parameter: what slots must share."""
    return [(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()]


def dense_order(t: Tensor) -> list[int] | None:
    """Dimension order that makes ``t`` contiguous, slot axis first; ``None`` if there is none."""
    strides = t.stride()
    order = sorted(range(t.dim()), key=lambda d: (-strides[d], d))
    if t.dim() > 0 and t.shape[0] > 1 and order[0] != 0:
        return None
    if t.dim() > 0:
        order = [0] + [d for d in order if d != 0]
    return order if t.permute(order).is_contiguous() else None


__all__ = ["build_model", "check_stackable", "dense_order", "signature"]
