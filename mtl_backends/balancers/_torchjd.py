"""``TorchJDBalancer``: TorchJD's aggregators behind the balancer contract (one adapter).

TorchJD (https://torchjd.org, ``torchjd.aggregation``) extracts a weight per task from the Gram
matrix ``G = J Jᵀ`` (a *Gramian weighting*), from the Jacobian itself (a *matrix weighting*:
Nash-MTL), or returns a direction only (an *aggregator*: ConFIG). The adapter turns each into
per-task contributions ``c_t g_t`` (so the loss weights still act after the balancer,
``d = Σ_t w_t c_t g_t``):

* Gramian weightings get ``G`` in float64 on the host (computed on the Jacobian's device);
  ``c = s · weights``.
* Matrix weightings get ``J`` in float64; ``c = s · weights``.
* Aggregators get ``J`` in float64 and return ``d``; ``c`` is the least-squares solution of
  ``Jᵀc = d`` (exact when ``d`` lies in the row space of ``J``, as it does for ConFIG).

``s`` is ``T`` for methods whose TorchJD direction is on the *mean* scale (UPGrad, DualProj,
IMTL-G, Aligned-MTL, MGDA, CAGrad: weights summing to about 1), so that every balancer of this
package returns, with unit loss weights, a direction on the scale of the sum of the task gradients
(``CoefficientBalancer``); it is 1 for methods already on the sum scale (ConFIG, PCGrad, GradVac)
or whose scale is part of the method (Nash-MTL, FairGrad). The methods page
(``docs/site/guide/methods.md``) lists each factor. TorchJD is imported only when such a
balancer is built.

Randomness: TorchJD's PCGrad and GradVac draw their visiting orders from torch's global generator.
The adapter runs them under a forked global RNG seeded from the balancer's own generator (given to
``reset``, saved by the trainer), so a run is reproducible, resumes bit for bit and does not
consume the run's torch stream.

Non-finite TorchJD weights (e.g. FairGrad's ``x_t → ∞`` for a task whose gradient is exactly zero)
are replaced by 0 and counted (``diagnostics()["nonfinite_weights"]``): a zero gradient contributes
nothing whatever its weight.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtl_backends.balancers._solvers import gram
from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.rng import method_generator

TORCHJD_INPUTS: tuple[str, ...] = ("gramian", "matrix", "aggregator")


class TorchJDBalancer(GradientBalancer):
    """Base of the balancers that wrap a TorchJD weighting or aggregator.

    Subclasses set ``torchjd_input`` (``"gramian"``, ``"matrix"`` or ``"aggregator"``),
    ``sum_scale`` (multiply TorchJD's weights by ``T``), ``uses_global_rng`` and implement
    ``build(n_tasks)``, which returns the TorchJD object. After each call ``last_weights`` holds
    TorchJD's own weights (float64 ``[T]``, before the factor ``T``) and ``last_coefficients`` the
    ``c_t`` applied to the unweighted gradients.

    Args:
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).
    """

    torchjd_input: ClassVar[str] = "gramian"
    sum_scale: ClassVar[bool] = True
    uses_global_rng: ClassVar[bool] = False

    def __init__(self, weights: str = "after") -> None:
        super().__init__(weights)
        self.method: Any = None
        self.last_weights: Tensor | None = None
        self.last_coefficients: Tensor | None = None
        self.nonfinite_weights = 0

    @abstractmethod
    def build(self, n_tasks: int) -> Any:
        """The TorchJD weighting (or aggregator) for ``n_tasks`` tasks."""

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Build a fresh TorchJD object for ``n_tasks`` tasks (its state starts empty)."""
        super().reset(n_tasks, generator)
        self.method = self.build(n_tasks)
        self.nonfinite_weights = 0

    def _ensure_method(self, n_tasks: int) -> Any:
        if self.method is None:
            self.reset(n_tasks, getattr(self, "generator", None))
        return self.method

    def _seed(self) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=method_generator(self)))

    def _call(self, method: Any, argument: Tensor) -> Any:
        if not self.uses_global_rng:
            return method(argument)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed())
            return method(argument)

    def task_weights(self, jacobian: Tensor) -> Tensor:
        """TorchJD's weights ``[T]`` (float64, host) for the unweighted Jacobian."""
        n = int(jacobian.shape[0])
        method = self._ensure_method(n)
        if self.torchjd_input == "gramian":
            weights = self._call(method, torch.from_numpy(gram(jacobian)))
        elif self.torchjd_input == "matrix":
            weights = self._call(method, jacobian.detach().to(torch.float64))
        else:
            j64 = jacobian.detach().to(torch.float64)
            d = self._call(method, j64)
            weights = torch.linalg.lstsq(j64.T, d[:, None]).solution[:, 0]
        return weights.detach().to("cpu", torch.float64).reshape(n)

    def contributions(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """``c_t g_t`` with ``c = s · weights`` (``s`` = ``T`` or 1, see the module docstring)."""
        n = int(jacobian.shape[0])
        weights = self.task_weights(jacobian)
        finite = torch.isfinite(weights)
        if not bool(finite.all()):
            self.nonfinite_weights += int((~finite).sum())
            weights = torch.where(finite, weights, torch.zeros_like(weights))
        self.last_weights = weights
        coef = weights * (n if self.sum_scale else 1)
        self.last_coefficients = coef
        return coef.to(jacobian)[:, None] * jacobian

    def diagnostics(self) -> dict[str, float]:
        """``nonfinite_weights``: TorchJD weights replaced by 0 so far in this run."""
        return {"nonfinite_weights": float(self.nonfinite_weights)}

    def state_dict(self) -> dict[str, Any]:
        """The counter (stateful methods add their TorchJD state)."""
        return {"nonfinite_weights": self.nonfinite_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.nonfinite_weights = int(state.get("nonfinite_weights", 0))


__all__ = ["TORCHJD_INPUTS", "TorchJDBalancer"]
