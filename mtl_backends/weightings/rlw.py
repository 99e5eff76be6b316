"""RLW: random loss weighting."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl_backends.rng import method_generator
from mtl_backends.weightings.base import LossWeighting, StepContext

RLW_DISTRIBUTIONS: tuple[str, ...] = ("normal", "dirichlet")


class RLW(LossWeighting):
    """Random loss weighting: fresh random weights on the simplex at every step.

    Paper: Lin, Ye, Zhang, Xu, Zhang, Zhang, "Reasonable Effectiveness of Random Weighting: A
    Litmus Test for Multi-Task Learning", TMLR 2022, https://arxiv.org/abs/2111.10603, §3.

    Formula: at every step ``w = softmax(z)``, ``z ~ N(0, I_T)`` (``distribution="normal"``, the
    paper's default and LibMTL's), or ``w ~ Dir(1, ..., 1)`` (``"dirichlet"``: uniform on the
    simplex, drawn as normalised ``Exp(1)`` variables); objective ``Σ_t w_t L_t``. Weights sum to 1
    (the paper's convention). Draws come from the run's weighting generator, so a run is
    reproducible and resumes exactly (the trainer saves the generator's state).

    Args:
        distribution: ``"normal"`` (default) or ``"dirichlet"``.

    State: none beyond the generator.
    """

    label = "RLW"

    transform = "identity"

    def __init__(self, distribution: str = "normal") -> None:
        if distribution not in RLW_DISTRIBUTIONS:
            raise ValueError(
                f"unknown RLW distribution {distribution!r}; "
                f"valid choices: {', '.join(RLW_DISTRIBUTIONS)}"
            )
        self.distribution = distribution

    def __call__(self, context: StepContext) -> Tensor:
        """One random draw on the simplex."""
        gen = method_generator(self)
        if self.distribution == "normal":
            z = torch.randn(context.n_tasks, generator=gen, dtype=torch.float64)
            w = torch.softmax(z, dim=0)
        else:
            # Dir(1) = normalised Exp(1); -log(1 - U) keeps U = 0 finite.
            u = torch.rand(context.n_tasks, generator=gen, dtype=torch.float64)
            e = -torch.log1p(-u)
            w = e / e.sum()
        return w.to(torch.float32)

    def __repr__(self) -> str:
        return f"RLW(distribution={self.distribution!r})"


__all__ = ["RLW", "RLW_DISTRIBUTIONS"]
