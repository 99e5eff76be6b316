"""TorchJD's own MGDA, PCGrad and CAGrad, registered beside ours so that runs and tests compare.

``mgda``, ``pcgrad`` and ``cagrad`` are this package's implementations; ``torchjd_mgda``,
``torchjd_pcgrad`` and ``torchjd_cagrad`` run TorchJD's through the same adapter (``_torchjd``).
The tests compare each pair: PCGrad bit for bit in the visiting order, CAGrad to the precision of
the two solvers (SLSQP here, Clarabel in TorchJD), MGDA against the exact min-norm point (TorchJD
uses Frank–Wolfe with a stopping threshold, so its direction is within that threshold).
"""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers._torchjd import TorchJDBalancer


class TorchJDMGDA(TorchJDBalancer):
    """TorchJD's MGDA: Frank–Wolfe on the Gram matrix (Sener & Koltun, Alg. 2).

    Paper: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018,
    https://arxiv.org/abs/1810.04650.

    Formula: ``λ ≈ argmin_{λ ∈ Δ} ‖Σ_t λ_t g_t‖²`` by Frank–Wolfe from the uniform start, stopping
    when a step moves less than ``epsilon`` or after ``max_iters`` steps; ``d = T Σ_t λ_t g_t`` (sum
    scale). Compare ``mgda``, which solves the same problem exactly.

    Args:
        epsilon: Frank–Wolfe stopping threshold on the step size (TorchJD's default 1e-3).
        max_iters: Frank–Wolfe iterations (TorchJD's default 100).
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "MGDA (TorchJD)"

    def __init__(self, epsilon: float = 1e-3, max_iters: int = 100, weights: str = "after") -> None:
        super().__init__(weights)
        if not epsilon > 0 or max_iters < 1:
            raise ValueError(
                f"TorchJD MGDA needs epsilon > 0 and max_iters >= 1, got {epsilon}, {max_iters}"
            )
        self.epsilon = float(epsilon)
        self.max_iters = int(max_iters)

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``MGDAWeighting``."""
        from torchjd.aggregation import MGDAWeighting

        return MGDAWeighting(epsilon=self.epsilon, max_iters=self.max_iters)


class TorchJDPCGrad(TorchJDBalancer):
    """TorchJD's PCGrad (Yu et al., Alg. 1) in Gram form.

    Paper: Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning",
    NeurIPS 2020, https://arxiv.org/abs/2001.06782.

    Formula: as ``pcgrad`` (each ``g_i`` projected off the original ``g_j`` it conflicts with, in a
    random order per task), ``d = Σ_i g̃_i`` (sum scale, as published). TorchJD returns only the
    summed weights ``Σ_i A_i``, so every task's contribution here is ``(Σ_i A_it) g_t``: the same
    ``d`` with unit loss weights, but loss weights act on these columns sums (not on the projected
    rows ``g̃_i`` as in ``pcgrad``). Orders come from the balancer's generator.

    Args:
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none (the generator's state is the trainer's).
    """

    label = "PCGrad (TorchJD)"

    sum_scale = False
    uses_global_rng = True

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``PCGradWeighting``."""
        from torchjd.aggregation import PCGradWeighting

        return PCGradWeighting()


class TorchJDCAGrad(TorchJDBalancer):
    """TorchJD's CAGrad: the dual solved with cvxpy's Clarabel.

    Paper: Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
    NeurIPS 2021, https://arxiv.org/abs/2110.14048.

    Formula: as ``cagrad`` (``w = argmin_{w ∈ Δ} g_w·g_0 + c‖g_0‖‖g_w‖``,
    ``d = g_0 + (c‖g_0‖/‖g_w‖) g_w``), on the Gram matrix normalised by its trace, solved by
    Clarabel; ``d`` times ``T`` (sum scale). TorchJD returns ``d = 0`` when ``‖g_w‖`` falls below
    ``norm_eps`` (``cagrad`` returns ``g_0`` there).

    Args:
        c: Radius factor (default 0.4, as ``cagrad``).
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "CAGrad (TorchJD)"

    def __init__(self, c: float = 0.4, weights: str = "after") -> None:
        super().__init__(weights)
        if c < 0:
            raise ValueError(f"CAGrad c must be >= 0, got {c}")
        self.c = float(c)

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``CAGradWeighting``."""
        from torchjd.aggregation import CAGradWeighting

        return CAGradWeighting(c=self.c)


__all__ = ["TorchJDCAGrad", "TorchJDMGDA", "TorchJDPCGrad"]
