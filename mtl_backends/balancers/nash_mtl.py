"""Nash-MTL (TorchJD): the Nash bargaining solution among the tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtl_backends.balancers._torchjd import TorchJDBalancer

# cvxpy statuses that count as a solved step (anything else, or an exception, is a fallback).
_SOLVED = ("optimal", "optimal_inaccurate")

UNCONVERGED_TOLERANCE = 1e-2
"""A solved step whose ``max_t |α_t (Gα)_t − 1|`` exceeds this is counted as unconverged."""


class NashMTL(TorchJDBalancer):
    """Multi-task learning as a bargaining game: ``α`` with ``(Gα)_t = 1/α_t`` for every task.

    Paper: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task Learning as a
    Bargaining Game", ICML 2022, https://arxiv.org/abs/2202.01017, Alg. 1 (TorchJD's Nash-MTL
    weighting, adapted from the authors' code).

    Formula: ``α >= 0`` solving ``G α = 1/α`` (the Nash bargaining solution of the tasks' utilities
    ``g_t · d``), found by the authors' sequence of ``optim_niter`` convex surrogates solved with
    ECOS through cvxpy, warm-started from the previous step's ``α``; ``d = Σ_t α_t g_t``, scaled
    down to norm ``max_norm`` when longer (the authors' code; 0 disables it). At the solution every
    task progresses, ``g_t · d = 1/α_t > 0``, and ``‖d‖`` does not grow with ``‖J‖`` (``α_t``
    scales like ``1/‖g‖``): the scale is the method's, not rescaled here.

    Solver fallbacks: when a surrogate fails (a cvxpy error or a status other than optimal), the
    published code (and TorchJD) silently keeps the previous iterate, which can be the previous
    step's ``α`` (or the initial ``α = 1``). Here each step with at least one failed surrogate is
    counted (``diagnostics()["solver_fallbacks"]``, recorded in experiment cells) instead of
    hidden; so is every solved step whose ``α`` still misses the bargaining condition
    ``α_t (Gα)_t = 1`` by more than 1e-2 after ``optim_niter`` surrogates
    (``"unconverged_steps"``): from a cold start the iteration is not scale-free (at 100 times the
    gradients of a converging input it stops at ``α_t (Gα)_t`` up to 6). The fallback counter
    wraps the problem's ``solve`` (TorchJD 0.18's internals; the dependency is pinned). All-zero
    gradients, which TorchJD would hand to cvxpy as NaN, keep the previous ``α`` and count as a
    fallback.

    Args:
        max_norm: Largest ``‖d‖`` (default 1.0, the authors'; 0 disables the clipping).
        update_weights_every: Recompute ``α`` every this many steps (default 1).
        optim_niter: Convex surrogates per step (default 20).
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: the previous ``α``, the step counter and the Gram normalisation factor (the cvxpy
    problem is rebuilt from them on load), and the counters, in ``state_dict``.
    """

    label = "Nash-MTL"

    torchjd_input = "matrix"
    sum_scale = False

    def __init__(
        self,
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        optim_niter: int = 20,
        weights: str = "after",
    ) -> None:
        super().__init__(weights)
        if not max_norm >= 0:
            raise ValueError(f"Nash-MTL max_norm must be >= 0, got {max_norm}")
        if update_weights_every < 1 or optim_niter < 1:
            raise ValueError(
                "Nash-MTL update_weights_every and optim_niter must be >= 1, got "
                f"{update_weights_every} and {optim_niter}"
            )
        self.max_norm = float(max_norm)
        self.update_weights_every = int(update_weights_every)
        self.optim_niter = int(optim_niter)
        self.solver_fallbacks = 0
        self.unconverged_steps = 0
        self._failed = False

    def build(self, n_tasks: int) -> Any:
        """TorchJD's Nash-MTL weighting, with a counting wrapper around its solver."""
        from torchjd.aggregation import NashMTL as TorchJDNashMTL

        # Any: the counting wrappers replace two of its attributes.
        weighting: Any = TorchJDNashMTL(
            n_tasks=n_tasks,
            max_norm=self.max_norm,
            update_weights_every=self.update_weights_every,
            optim_niter=self.optim_niter,
        ).weighting
        init_problem = weighting._init_optim_problem

        def init_counted() -> None:
            init_problem()
            solve = weighting.prob.solve

            def counted_solve(*args: Any, **kwargs: Any) -> Any:
                try:
                    out = solve(*args, **kwargs)
                except Exception:
                    self._failed = True
                    raise
                if weighting.prob.status not in _SOLVED:
                    self._failed = True
                return out

            weighting.prob.solve = counted_solve

        weighting._init_optim_problem = init_counted
        return weighting

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Fresh Nash-MTL state and counter."""
        super().reset(n_tasks, generator)
        self.solver_fallbacks = 0
        self.unconverged_steps = 0

    def task_weights(self, jacobian: torch.Tensor) -> torch.Tensor:
        """``α`` of this step (counting a step whose solve fell back)."""
        w = self._ensure_method(int(jacobian.shape[0]))
        gram_norm = float(
            torch.linalg.vector_norm(
                jacobian.detach().to(torch.float64) @ jacobian.detach().to(torch.float64).T
            )
        )
        if not (np.isfinite(gram_norm) and gram_norm > 0.0):
            # All gradients zero (or non-finite): TorchJD would divide by a zero norm and hand NaN
            # to cvxpy. Keep the previous α, as its fallback does, and count the step.
            if w.step == 0:
                w._init_optim_problem()
            w.step += 1
            self.solver_fallbacks += 1
            return torch.from_numpy(np.array(w.prvs_alpha, dtype=np.float64, copy=True))
        self._failed = False
        solving = w.step % self.update_weights_every == 0
        weights = super().task_weights(jacobian)
        self.solver_fallbacks += int(self._failed)
        if solving and not self._failed:
            # The surrogates stop after optim_niter iterations whether or not α reached the
            # bargaining solution α_t (Gα)_t = 1; count the steps that did not (α before clipping).
            j64 = jacobian.detach().to(torch.float64)
            alpha = torch.from_numpy(np.array(w.prvs_alpha, dtype=np.float64)).to(j64.device)
            residual = float((alpha * (j64 @ (j64.T @ alpha))).sub(1.0).abs().max())
            self.unconverged_steps += int(not residual <= UNCONVERGED_TOLERANCE)
        return weights

    def diagnostics(self) -> dict[str, float]:
        """``solver_fallbacks``, ``unconverged_steps`` and ``nonfinite_weights``."""
        return {
            **super().diagnostics(),
            "solver_fallbacks": float(self.solver_fallbacks),
            "unconverged_steps": float(self.unconverged_steps),
        }

    def state_dict(self) -> dict[str, Any]:
        """Previous ``α``, step counter, normalisation factor and counters (tensors only)."""
        w = self._ensure_method(int(getattr(self, "n_tasks", 0) or 1))
        return {
            **super().state_dict(),
            "prvs_alpha": torch.from_numpy(np.array(w.prvs_alpha, dtype=np.float64, copy=True)),
            "prvs_alpha_dtype": str(np.asarray(w.prvs_alpha).dtype),
            "step": float(w.step),
            "normalization_factor": torch.from_numpy(
                np.array(w.normalization_factor, dtype=np.float64, copy=True)
            ),
            "solver_fallbacks": self.solver_fallbacks,
            "unconverged_steps": self.unconverged_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state and rebuild the cvxpy problem the next solve uses."""
        super().load_state_dict(state)
        w = self._ensure_method(int(getattr(self, "n_tasks", 0) or 1))
        w.prvs_alpha = state["prvs_alpha"].numpy().astype(state["prvs_alpha_dtype"], copy=True)
        w.normalization_factor = state["normalization_factor"].numpy().copy()
        w.step = float(state["step"])
        if w.step > 0:
            # TorchJD builds the problem at its first call only; its parameters are all set again
            # before every solve, so a rebuilt problem solves exactly as the original one.
            w._init_optim_problem()
        self.solver_fallbacks = int(state["solver_fallbacks"])
        self.unconverged_steps = int(state["unconverged_steps"])

    def __repr__(self) -> str:
        return (
            f"NashMTL(max_norm={self.max_norm}, update_weights_every={self.update_weights_every}, "
            f"optim_niter={self.optim_niter}, weights={self.weights_mode!r})"
        )


__all__ = ["NashMTL"]
