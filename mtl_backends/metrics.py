"""Multi-task summary metrics against single-task (STL) references.

Two conventions exist in the literature and are never mixed:

* **Δm** (Maninis et al., CVPR 2019; used by CAGrad, Nash-MTL, FAMO, IGB, IMGrad): averaged over
  all K *metrics*, ``Δm = 100/K Σ_k (-1)^{s_k} (M_k - B_k) / B_k`` with ``s_k = 1`` when higher is
  better. **Lower is better**; negative means better than STL.
* **Δp** (LibMTL ``count_improvement``; used by DB-MTL): the improvement
  ``(-1)^{1-s_k} (M_k - B_k) / B_k`` is averaged *within each task*, then over tasks, ×100.
  **Higher is better**. With one metric per task, ``Δp = -Δm``.

A third summary, the mean rank (MR), ranks methods per metric and averages the ranks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _relative(
    metrics: Sequence[float], reference: Sequence[float], higher_is_better: Sequence[bool]
) -> np.ndarray:
    m = np.asarray(metrics, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    s = np.asarray(higher_is_better, dtype=bool)
    if not (m.shape == b.shape == s.shape) or m.ndim != 1:
        raise ValueError(
            f"metrics ({m.shape}), reference ({b.shape}) and higher_is_better ({s.shape}) must be "
            "flat sequences of the same length"
        )
    if m.size == 0:
        raise ValueError("no metrics given")
    if np.any(b == 0) or not np.all(np.isfinite(b)):
        raise ValueError(f"reference values must be finite and non-zero, got {b.tolist()}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"metric values must be finite, got {m.tolist()}")
    sign = np.where(s, -1.0, 1.0)
    # Positive entries mean "worse than the reference".
    return sign * (m - b) / np.abs(b)


def delta_m(
    metrics: Sequence[float], reference: Sequence[float], higher_is_better: Sequence[bool]
) -> float:
    """Δm in percent (lower is better): the mean relative degradation over all metrics.

    Args:
        metrics: The method's metric values ``M_k``.
        reference: STL values ``B_k`` of the same metrics, same order.
        higher_is_better: Direction of each metric.

    Returns:
        ``100/K Σ_k (-1)^{s_k} (M_k - B_k) / B_k``.

    Example:
        Two lower-is-better metrics 1.1 vs 1.0 and 2.0 vs 2.0 give ``(10 + 0) / 2 = 5.0``.
    """
    return float(100.0 * _relative(metrics, reference, higher_is_better).mean())


def delta_p(
    metrics: Sequence[float],
    reference: Sequence[float],
    higher_is_better: Sequence[bool],
    task_index: Sequence[int],
) -> float:
    """Δp in percent (higher is better): improvement averaged within tasks, then over tasks.

    Args:
        metrics: The method's metric values.
        reference: STL values of the same metrics, same order.
        higher_is_better: Direction of each metric.
        task_index: The task each metric belongs to.

    Returns:
        ``100 · mean_t mean_{k ∈ t} (-1)^{1-s_k} (M_k - B_k) / B_k``.
    """
    improvement = -_relative(metrics, reference, higher_is_better)
    tasks = np.asarray(task_index)
    if tasks.shape != improvement.shape:
        raise ValueError(f"task_index has {tasks.size} entries, metrics have {improvement.size}")
    per_task = [improvement[tasks == t].mean() for t in np.unique(tasks)]
    return float(100.0 * np.mean(per_task))


def mean_rank(
    results: Mapping[str, Sequence[float]], higher_is_better: Sequence[bool]
) -> dict[str, float]:
    """Mean rank (MR) of each method over metrics; rank 1 is best, ties share the mean rank.

    Args:
        results: Method name -> its metric values (same order for every method).
        higher_is_better: Direction of each metric.

    Returns:
        Method name -> mean rank (lower is better).
    """
    names = list(results)
    table = np.asarray([results[n] for n in names], dtype=np.float64)
    s = np.asarray(higher_is_better, dtype=bool)
    if table.ndim != 2 or table.shape[1] != s.size:
        raise ValueError("every method needs one value per metric")
    keyed = np.where(s, -table, table)  # smaller is better in every column
    ranks = np.zeros_like(keyed)
    for k in range(keyed.shape[1]):
        col = keyed[:, k]
        for i, v in enumerate(col):
            ranks[i, k] = (col < v).sum() + ((col == v).sum() + 1) / 2.0
    return {n: float(ranks[i].mean()) for i, n in enumerate(names)}
