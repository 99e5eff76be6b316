"""What can be stacked: models whose training forward is a pure function of parameters and input.

``build_model`` draws a slot's initial model exactly as ``MTLTrainer`` draws it for the same seed;
``check_stackable`` refuses layers with running statistics or randomness.
"""

from __future__ import annotations

from collections.abc import Callable

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


BatchedForward = Callable[[dict[str, Tensor], Tensor], list[Tensor]]
"""``forward(stacked params, inputs [N, B, d]) -> one output [N, B, o] per task``."""

_ACTIVATIONS: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.ReLU: torch.relu,
    nn.Tanh: torch.tanh,
}


def mlp_forward(model: nn.Module) -> BatchedForward | None:
    """A batched forward written with ``baddbmm`` for a hard-parameter-sharing MLP, else ``None``.

    For an encoder that is an ``nn.Sequential`` of ``Linear`` and ``ReLU`` / ``Tanh`` layers and
    ``Linear`` heads (the synthetic benchmark's model), stacked layers are batched matrix products
    with no ``vmap`` or ``functional_call`` around them: the same values as the ``torch.func``
    route bit for bit (tested), a quarter less time on small models. Other models return ``None``
    and stack through ``torch.func``.
    """
    encoder = getattr(model, "encoder", None)
    heads = getattr(model, "heads", None)
    if not isinstance(encoder, nn.Sequential) or not isinstance(heads, nn.ModuleList):
        return None
    layers: list[tuple[str, str | Callable[[Tensor], Tensor]]] = []
    for i, layer in enumerate(encoder):
        if isinstance(layer, nn.Linear):
            layers.append(("linear", f"encoder.{i}"))
        elif type(layer) in _ACTIVATIONS:
            layers.append(("act", _ACTIVATIONS[type(layer)]))
        else:
            return None
    if not all(isinstance(h, nn.Linear) for h in heads):
        return None
    n_heads = len(heads)

    def linear(params: dict[str, Tensor], prefix: str, h: Tensor) -> Tensor:
        bias = params.get(f"{prefix}.bias")
        weight = params[f"{prefix}.weight"].transpose(1, 2)
        return torch.bmm(h, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, weight)

    def forward(params: dict[str, Tensor], x: Tensor) -> list[Tensor]:
        h = x
        for kind, what in layers:
            h = linear(params, what, h) if kind == "linear" else what(h)  # type: ignore[arg-type,operator]
        return [linear(params, f"heads.{t}", h) for t in range(n_heads)]

    return forward


__all__ = [
    "BatchedForward",
    "build_model",
    "check_stackable",
    "dense_order",
    "mlp_forward",
    "signature",
]
