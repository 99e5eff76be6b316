"""Aggregate statistics of RL evaluations (Agarwal et al., NeurIPS 2021), on numpy.

"Deep Reinforcement Learning at the Edge of the Statistical Precipice" recommends, for a few runs
per task: the interquartile mean (IQM) and the mean with *stratified-bootstrap* confidence
intervals, the *probability of improvement* of one method over another, and *performance
profiles*. This module implements those estimators with the definitions of the authors' library
`rliable` 1.2.0 (``rliable.metrics`` and ``rliable.library``):

* **Scores by stratum.** ``strata`` is a sequence of 1-D score arrays, one per stratum (a *task* in
  rliable: a fixed condition every method is run on), each holding that stratum's *runs* (the
  independent repetitions that the bootstrap resamples). rliable takes a ``runs x tasks`` matrix;
  here strata may hold different numbers of runs (a failed run leaves its stratum shorter), and on
  a full matrix every function equals rliable's.
* **IQM**: the mean of the middle 50% of all runs of all strata pooled, with rliable's trimming
  (``scipy.stats.trim_mean(x, 0.25)``): ``k = floor(n / 4)`` values are cut from each end of the
  ``n`` sorted scores (``n = 5``: the middle 3; ``n < 4``: nothing is cut).
* **Mean**: the mean over strata of each stratum's mean run (``aggregate_mean``).
* **Probability of improvement** of X over Y: in each stratum the Mann–Whitney estimate
  ``P(X better than Y) + ½ P(X = Y)`` over every pair of a run of X and a run of Y, then averaged
  over the strata (``probability_of_improvement``).
* **Performance profile**: at each threshold τ, the fraction of all runs (pooled) that are strictly
  better than τ (``run_score_deviation``).
* **Stratified bootstrap**: each replicate draws, in every stratum independently, as many runs as
  the stratum has, with replacement, from that stratum only (``StratifiedBootstrap``); the two
  methods of a probability of improvement are resampled independently
  (``StratifiedIndependentBootstrap``). The interval is the percentile interval of the replicates
  (``numpy.percentile``, linear interpolation, as ``arch``'s ``method="percentile"``).

**Directions.** rliable assumes higher scores are better. Here every function whose result depends
on the direction (probability of improvement, performance profile) takes a keyword-only
``higher_is_better`` with no default, so a lower-is-better score such as Δm is never read the wrong
way round; IQM and mean do not depend on it.

**Why not the ``rliable`` package.** Checked on Python 3.11 in a fresh venv (``pip install
rliable``): it installs rliable 1.2.0 with ``arch<8`` (7.2.0), statsmodels, pandas 3, seaborn and
absl-py, and then ``import rliable.library`` fails inside arch 7.2.0 (``TypeError:
deprecate_kwarg() missing 1 required positional argument: 'new_arg_name'``: pandas 3 changed that
helper); it imports only with ``pandas<3`` pinned by hand, a pin igb-rl has no other reason for.
Its bootstrap also draws with the global ``np.random.choice`` and ignores its ``random_state``
argument, so the same call gives different intervals unless the process-wide numpy state is
seeded; and it needs equally many runs in every task. The estimators are a few lines of numpy
(here, vectorised over the replicates, with a private seeded generator), so they live here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Scores of one method: one 1-D array of runs per stratum.
Strata = Sequence[npt.ArrayLike]

#: Bootstrap replicates of the interval estimates: rliable's default is 50,000 (for its Python loop
#: over replicates); 10,000 keeps the Monte-Carlo error of a 95% percentile bound well below the
#: two decimals the reports print, at a memory bounded by ``replicates x runs`` floats.
DEFAULT_REPS = 10_000
#: Replicates of a performance profile's bands (rliable's default for profiles).
PROFILE_REPS = 2_000
# Pairs compared at once in a probability of improvement (bounds memory for many runs).
_PAIR_BUDGET = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap confidence interval.

    Attributes:
        point: The statistic of the scores themselves.
        low: Lower bound of the percentile interval.
        high: Upper bound of the percentile interval.
    """

    point: float
    low: float
    high: float


def check_strata(strata: Strata, what: str = "scores") -> list[np.ndarray]:
    """``strata`` as float64 1-D arrays, each non-empty and finite.

    Args:
        strata: One sequence of run scores per stratum.
        what: Name of the scores in error messages.

    Raises:
        ValueError: No stratum, an empty stratum, a stratum that is not 1-D or a non-finite score
            (each message names the stratum).
    """
    if isinstance(strata, np.ndarray) and strata.ndim != 1:
        raise ValueError(
            f"{what}: give a sequence of 1-D run arrays, one per stratum (for a runs x tasks "
            f"matrix pass list(matrix.T)), not an array of shape {strata.shape}"
        )
    out = [np.asarray(s, dtype=np.float64) for s in strata]
    if not out:
        raise ValueError(f"{what}: no stratum (give at least one stratum with one run)")
    for i, s in enumerate(out):
        if s.ndim != 1:
            raise ValueError(f"{what}: stratum {i} must be 1-D (its runs), got shape {s.shape}")
        if s.size == 0:
            raise ValueError(f"{what}: stratum {i} has no run")
        bad = s[~np.isfinite(s)]
        if bad.size:
            raise ValueError(f"{what}: stratum {i} has a non-finite score ({bad[0]})")
    return out


def _as_batch(strata: list[np.ndarray]) -> list[np.ndarray]:
    """The strata as one replicate: ``(1, runs)`` arrays."""
    return [s[None, :] for s in strata]


def iqm_batch(batch: list[np.ndarray]) -> np.ndarray:
    """IQM of every replicate: ``floor(n / 4)`` scores cut from each end of the pooled ``n``."""
    pooled = np.sort(np.concatenate(batch, axis=1), axis=1)
    n = pooled.shape[1]
    cut = n // 4  # scipy.stats.trim_mean: int(proportiontocut * n) cut from each end
    return pooled[:, cut : n - cut].mean(axis=1)


def mean_batch(batch: list[np.ndarray]) -> np.ndarray:
    """Mean over strata of each stratum's mean run, for every replicate."""
    return np.mean([s.mean(axis=1) for s in batch], axis=0)


def improvement_batch(
    x: list[np.ndarray], y: list[np.ndarray], *, higher_is_better: bool
) -> np.ndarray:
    """Probability that X beats Y (ties count ½), per stratum, averaged over strata, per replicate.

    Args:
        x: Resampled strata of X (``(replicates, runs)`` each).
        y: Resampled strata of Y, aligned with ``x``.
        higher_is_better: Direction of the scores (Δm: ``False``, X better means X lower).
    """
    per_stratum = []
    for xs, ys in zip(x, y, strict=True):
        reps = xs.shape[0]
        chunk = max(1, _PAIR_BUDGET // (xs.shape[1] * ys.shape[1]))
        p = np.empty(reps)
        for start in range(0, reps, chunk):
            a = xs[start : start + chunk, :, None]
            b = ys[start : start + chunk, None, :]
            better = (a > b) if higher_is_better else (a < b)
            p[start : start + chunk] = (better + 0.5 * (a == b)).mean(axis=(1, 2))
        per_stratum.append(p)
    return np.mean(per_stratum, axis=0)


def profile_batch(
    batch: list[np.ndarray], taus: np.ndarray, *, higher_is_better: bool
) -> np.ndarray:
    """Fraction of the pooled runs strictly better than each τ: ``(replicates, len(taus))``."""
    pooled = np.concatenate(batch, axis=1)[:, :, None]
    better = (pooled > taus) if higher_is_better else (pooled < taus)
    return better.mean(axis=1)


def iqm(strata: Strata) -> float:
    """Interquartile mean of all runs of all strata (rliable's ``aggregate_iqm``)."""
    return float(iqm_batch(_as_batch(check_strata(strata)))[0])


def stratified_mean(strata: Strata) -> float:
    """Mean over strata of each stratum's mean run (rliable's ``aggregate_mean``)."""
    return float(mean_batch(_as_batch(check_strata(strata)))[0])


def probability_of_improvement(x: Strata, y: Strata, *, higher_is_better: bool) -> float:
    """``P(X better than Y) + ½ P(X = Y)`` per stratum, averaged over strata.

    Args:
        x: Scores of X, one array of runs per stratum.
        y: Scores of Y on the same strata, in the same order.
        higher_is_better: Direction of the scores (for Δm: ``False``).

    Raises:
        ValueError: ``x`` and ``y`` have different numbers of strata, or bad scores.
    """
    xs, ys = _aligned(x, y)
    batch = improvement_batch(_as_batch(xs), _as_batch(ys), higher_is_better=higher_is_better)
    return float(batch[0])


def performance_profile(
    strata: Strata, taus: npt.ArrayLike, *, higher_is_better: bool
) -> np.ndarray:
    """Fraction of all runs strictly better than each threshold (rliable's score distribution).

    Args:
        strata: Scores, one array of runs per stratum (pooled: every run counts once).
        taus: Thresholds.
        higher_is_better: ``True``: the fraction of runs ``> τ``; ``False``: ``< τ`` (Δm).
    """
    t = _taus(taus)
    return profile_batch(_as_batch(check_strata(strata)), t, higher_is_better=higher_is_better)[0]


def resample(strata: list[np.ndarray], reps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``reps`` stratified resamples: each stratum's runs drawn with replacement from itself."""
    return [s[rng.integers(0, s.size, size=(reps, s.size))] for s in strata]


def bootstrap(
    statistic: Callable[..., np.ndarray],
    *samples: Strata,
    reps: int = DEFAULT_REPS,
    level: float = 0.95,
    seed: int | np.random.SeedSequence = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and stratified-bootstrap percentile interval of a batched statistic.

    Every sample is resampled independently, stratum by stratum (a probability of improvement's
    two methods as rliable's ``StratifiedIndependentBootstrap``; one sample as its
    ``StratifiedBootstrap``). Replicates are drawn sample by sample, stratum by stratum, from one
    ``numpy`` generator seeded with ``seed``: the same inputs and seed give the same numbers.

    Args:
        statistic: Called with one list of ``(replicates, runs)`` arrays per sample; returns
            ``(replicates,)`` or ``(replicates, k)`` values.
        *samples: Scores of each sample, one array of runs per stratum.
        reps: Bootstrap replicates (>= 1).
        level: Coverage of the two-sided interval, in (0, 1).
        seed: Seed of the resampling.

    Returns:
        ``(point, low, high)``: arrays of the statistic's shape without the replicate axis.

    Raises:
        ValueError: ``reps < 1``, ``level`` outside (0, 1), no sample or bad scores.
    """
    if not isinstance(reps, int | np.integer) or reps < 1:
        raise ValueError(f"reps must be an integer >= 1, got {reps!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1) (e.g. 0.95), got {level!r}")
    if not samples:
        raise ValueError("bootstrap: give at least one sample of scores")
    checked = [check_strata(s, f"sample {i}") for i, s in enumerate(samples)]
    point = np.asarray(statistic(*[_as_batch(s) for s in checked]))[0]
    rng = np.random.default_rng(seed)
    values = np.asarray(statistic(*[resample(s, int(reps), rng) for s in checked]))
    alpha = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [alpha, 100.0 - alpha], axis=0)
    return point, low, high


def _interval(
    statistic: Callable[..., np.ndarray],
    *samples: Strata,
    reps: int,
    level: float,
    seed: int | np.random.SeedSequence,
) -> Interval:
    """``bootstrap`` of a scalar statistic, as an ``Interval``."""
    point, low, high = bootstrap(statistic, *samples, reps=reps, level=level, seed=seed)
    return Interval(float(point), float(low), float(high))


def iqm_interval(
    strata: Strata,
    *,
    reps: int = DEFAULT_REPS,
    level: float = 0.95,
    seed: int | np.random.SeedSequence = 0,
) -> Interval:
    """IQM and its stratified-bootstrap percentile interval (arguments as ``bootstrap``)."""
    return _interval(iqm_batch, strata, reps=reps, level=level, seed=seed)


def mean_interval(
    strata: Strata,
    *,
    reps: int = DEFAULT_REPS,
    level: float = 0.95,
    seed: int | np.random.SeedSequence = 0,
) -> Interval:
    """Stratified mean and its stratified-bootstrap percentile interval (as ``bootstrap``)."""
    return _interval(mean_batch, strata, reps=reps, level=level, seed=seed)


def improvement_interval(
    x: Strata,
    y: Strata,
    *,
    higher_is_better: bool,
    reps: int = DEFAULT_REPS,
    level: float = 0.95,
    seed: int | np.random.SeedSequence = 0,
) -> Interval:
    """Probability of improvement of X over Y and its interval (X and Y resampled independently).

    Args:
        x: Scores of X, one array of runs per stratum.
        y: Scores of Y on the same strata.
        higher_is_better: Direction of the scores (for Δm: ``False``).
        reps: Bootstrap replicates.
        level: Coverage of the interval.
        seed: Seed of the resampling.
    """
    xs, ys = _aligned(x, y)

    def statistic(bx: list[np.ndarray], by: list[np.ndarray]) -> np.ndarray:
        return improvement_batch(bx, by, higher_is_better=higher_is_better)

    return _interval(statistic, xs, ys, reps=reps, level=level, seed=seed)


def profile_interval(
    strata: Strata,
    taus: npt.ArrayLike,
    *,
    higher_is_better: bool,
    reps: int = PROFILE_REPS,
    level: float = 0.95,
    seed: int | np.random.SeedSequence = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A performance profile at ``taus`` with its pointwise stratified-bootstrap band.

    Returns:
        ``(profile, low, high)``, each of ``len(taus)``.
    """
    t = _taus(taus)

    def statistic(batch: list[np.ndarray]) -> np.ndarray:
        return profile_batch(batch, t, higher_is_better=higher_is_better)

    return bootstrap(statistic, strata, reps=reps, level=level, seed=seed)


def _aligned(x: Strata, y: Strata) -> tuple[list[np.ndarray], list[np.ndarray]]:
    xs, ys = check_strata(x, "x"), check_strata(y, "y")
    if len(xs) != len(ys):
        raise ValueError(
            f"x has {len(xs)} strata and y {len(ys)}: a probability of improvement compares the "
            "two methods stratum by stratum, so both need the same strata in the same order"
        )
    return xs, ys


def _taus(taus: npt.ArrayLike) -> np.ndarray:
    t = np.asarray(taus, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError(f"taus must be a non-empty 1-D array of finite thresholds, got {taus!r}")
    return t


__all__ = [
    "DEFAULT_REPS",
    "PROFILE_REPS",
    "Interval",
    "Strata",
    "bootstrap",
    "check_strata",
    "improvement_batch",
    "improvement_interval",
    "iqm",
    "iqm_batch",
    "iqm_interval",
    "mean_batch",
    "mean_interval",
    "performance_profile",
    "probability_of_improvement",
    "profile_batch",
    "profile_interval",
    "resample",
    "stratified_mean",
]
