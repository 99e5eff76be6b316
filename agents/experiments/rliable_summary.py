"""Rows over agent seeds and run seeds, and their rliable summary (Agarwal et al., 2021).

**Agent seeds in a grid.** An experiment runs an exported policy as one weighting entry (one
folder, one label), so the agent seeds of one design are separate entries, labelled by a trailing
agent-seed marker: ``generalist s0`` / ``generalist s1`` (``configs/experiments/generalist.yaml``),
``learned policy, agent seed 1`` or ``learned policy (agent seed 2)``.
``runs_rows`` merges the rows whose weighting labels differ only by that marker (same balancer) into
one row whose *runs* are its (agent seed x run seed) cells. Every other row's runs are its run
seeds; a method that trains an agent inside each run (IGBv2) has one agent per run, so its runs
already vary the agent seed with the run seed.

**Strata.** The stratified bootstrap (``agents.experiments.rl_stats``) resamples the runs within
each stratum; strata are rliable's *tasks*, the problems a claim is about, which every method is
run on:

* On a benchmark whose seeds are *instances* (``BenchmarkEntry.instances``; always in ``igb
  evaluate``) every run seed is its own problem (its own data, and with variation its own task
  scales): the strata are the run seeds, and within each the agent seeds are resampled. Instances
  differ far more than methods do (Δm spreads of several points between instances), so resampling
  them would drown the agent-seed variability that this summary exists to show, and comparing
  methods instance by instance keeps the pairing of the design.
* On a benchmark with fixed arguments every seed trains the same problem (the seed draws the
  initialisation and batch order only): the benchmark is the one stratum, and the runs resampled
  within it are all (agent seed x run seed) cells: both seeds are repetitions of one experiment.

**Directions.** Δm is lower-is-better: IQM and mean are reported as they are (lower is better), the
probability of improvement is ``P(Δm_row < Δm_reference) + ½ P(=)`` (higher is better) and a
performance profile counts the runs with ``Δm < τ``.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.experiments.rl_stats import (
    DEFAULT_REPS,
    Interval,
    improvement_interval,
    iqm_interval,
    mean_interval,
)
from agents.experiments.rows import Row, baseline_row

#: A weighting label ending in an agent-seed marker: ``<design> s<N>``, ``<design>, agent seed <N>``
#: or ``<design> (agent seed <N>)``.
AGENT_SEED_LABEL = re.compile(
    r"^(?P<design>.*?\S)(?:\s*,\s*|\s+)(?P<open>\()?(?:agent[ _-]?seed\s*|s)(?P<seed>\d+)"
    r"(?(open)\))$"
)
#: The score of the summary (lower is better).
SCORE = "delta_m"


def agent_seed_of(label: str) -> tuple[str, int] | None:
    """``(design, agent seed)`` of a weighting label with an agent-seed marker, else ``None``.

    >>> agent_seed_of("generalist s2")
    ('generalist', 2)
    >>> agent_seed_of("learned policy, agent seed 1")
    ('learned policy', 1)
    >>> agent_seed_of("IGBv2") is None
    True
    """
    match = AGENT_SEED_LABEL.match(label.strip())
    if match is None:
        return None
    return match.group("design"), int(match.group("seed"))


@dataclass(frozen=True)
class RunsRow:
    """One row of the summary: a table row, or the rows of one design's agent seeds merged.

    Attributes:
        label: Row label (for merged rows the design, with the balancer as in the table).
        weighting: Weighting label (for merged rows the design).
        members: The table rows (one per agent seed; a single row otherwise).
        agent_seeds: The agent seeds of ``members`` (empty: the label names none).
    """

    label: str
    weighting: str
    members: tuple[Row, ...]
    agent_seeds: tuple[int, ...]

    def scores(self, key: str = SCORE) -> dict[tuple[int | None, int], float]:
        """``(agent seed or None, run seed) -> value`` of every successful run."""
        out: dict[tuple[int | None, int], float] = {}
        for i, row in enumerate(self.members):
            agent = self.agent_seeds[i] if self.agent_seeds else None
            for seed, value in row.values(key).items():
                out[(agent, seed)] = value
        return out

    def run_seeds(self, key: str = SCORE) -> set[int]:
        """Run seeds with at least one successful run."""
        return {seed for _, seed in self.scores(key)}

    def strata(
        self, by_run_seed: bool, seeds: set[int] | None = None, key: str = SCORE
    ) -> list[np.ndarray]:
        """The runs by stratum: one stratum per run seed (sorted) or one stratum of all runs.

        Args:
            by_run_seed: One stratum per run seed (instances) instead of one for the benchmark.
            seeds: Keep the runs of these run seeds only (``None``: all).
            key: Record field of the score.
        """
        scores = {k: v for k, v in self.scores(key).items() if seeds is None or k[1] in seeds}
        order = sorted(scores, key=lambda k: (k[1], -1 if k[0] is None else k[0]))
        if not by_run_seed:
            return [np.array([scores[k] for k in order])] if order else []
        by_seed: dict[int, list[float]] = {}
        for k in order:
            by_seed.setdefault(k[1], []).append(scores[k])
        return [np.array(v) for _, v in sorted(by_seed.items())]


def runs_rows(rows: Sequence[Row]) -> list[RunsRow]:
    """The rows of a table with each design's agent seeds merged, at its first member's place.

    Rows merge when their weighting labels carry an agent-seed marker (``agent_seed_of``) with the
    same design and they share the balancer (and its flat radius); a marker on one row alone still
    records its agent seed. Two rows of one design and balancer with the same agent seed are an
    error.

    Raises:
        ValueError: Two rows claim the same design, balancer and agent seed.
    """
    groups: dict[tuple[str, str, bool], list[tuple[int, Row]]] = {}
    order: list[tuple[str, str, bool] | Row] = []
    for row in rows:
        parsed = agent_seed_of(row.weighting)
        if parsed is None:
            order.append(row)
            continue
        key = (parsed[0], row.balancer, row.flat)
        if key not in groups:
            groups[key] = []
            order.append(key)
        if any(seed == parsed[1] for seed, _ in groups[key]):
            raise ValueError(
                f"rows {row.label!r} and another row of design {parsed[0]!r} under "
                f"{row.balancer!r} both name agent seed {parsed[1]}; give each agent seed its own "
                "number"
            )
        groups[key].append((parsed[1], row))
    out: list[RunsRow] = []
    for item in order:
        if isinstance(item, Row):
            out.append(RunsRow(item.label, item.weighting, (item,), ()))
            continue
        members = sorted(groups[item], key=lambda m: m[0])
        first = members[0][1]
        suffix = first.label[len(first.weighting) :]  # " + DB-MTL" or ""
        single = len(members) == 1
        out.append(
            RunsRow(
                first.label if single else item[0] + suffix,
                first.weighting if single else item[0],
                tuple(r for _, r in members),
                tuple(seed for seed, _ in members),
            )
        )
    return out


@dataclass(frozen=True)
class RunsSummary:
    """The RL-style summary of one row (Δm: lower is better).

    Attributes:
        label: Row label.
        agent_seeds: Number of agent seeds (0: the label names none).
        runs: Successful runs (agent seed x run seed cells).
        strata: Strata of the runs.
        resampled: Whether some stratum has two runs or more (else the bootstrap cannot move the
            estimates and the intervals are points).
        iqm: IQM of Δm with its interval (``None`` without runs).
        mean: Mean of Δm (over strata of the stratum means) with its interval.
        reference: Label of the row it is compared with (``None``: none; its own label: it is the
            reference).
        improvement: Probability that its Δm is lower than the reference's, with its interval
            (``None`` for the reference itself, without a reference or without common run seeds).
    """

    label: str
    agent_seeds: int
    runs: int
    strata: int
    resampled: bool
    iqm: Interval | None
    mean: Interval | None
    reference: str | None
    improvement: Interval | None

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-friendly values."""

        def interval(x: Interval | None) -> dict[str, float] | None:
            return None if x is None else {"point": x.point, "low": x.low, "high": x.high}

        return {
            "agent_seeds": self.agent_seeds,
            "runs": self.runs,
            "strata": self.strata,
            "resampled": self.resampled,
            "iqm_delta_m": interval(self.iqm),
            "mean_delta_m": interval(self.mean),
            "reference": self.reference,
            "p_improvement": interval(self.improvement),
        }


def row_seed(seed: int, label: str, statistic: int) -> np.random.SeedSequence:
    """The bootstrap seed of one statistic of one row: ``seed``, the label's CRC-32, the statistic.

    A row's intervals depend on its own label and runs only, not on the other rows of the table.
    """
    return np.random.SeedSequence([seed, zlib.crc32(label.encode()), statistic])


def summarise(
    rows: Sequence[Row],
    reference: str,
    *,
    by_run_seed: bool,
    reps: int = DEFAULT_REPS,
    level: float = 0.95,
    seed: int = 0,
) -> list[RunsSummary]:
    """The summary of every row of a table (agent seeds merged), against ``reference``.

    Args:
        rows: The table's rows (``benchmark_rows``).
        reference: Weighting label or registry name of the reference (e.g. the experiment's
            ``baseline``); each row is compared with the reference under its balancer, else under
            plain ``sum`` (``rows.baseline_row``).
        by_run_seed: Strata are the run seeds (instances) instead of one stratum per benchmark.
        reps: Bootstrap replicates.
        level: Coverage of the intervals.
        seed: Seed of the bootstrap.
    """
    merged = runs_rows(rows)
    owner = {id(m): rr for rr in merged for m in rr.members}
    out: list[RunsSummary] = []
    for rr in merged:
        strata = rr.strata(by_run_seed)
        runs = sum(s.size for s in strata)
        resampled = any(s.size > 1 for s in strata)
        iqm = mean = improvement = None
        if strata:
            iqm = iqm_interval(strata, reps=reps, level=level, seed=row_seed(seed, rr.label, 0))
            mean = mean_interval(strata, reps=reps, level=level, seed=row_seed(seed, rr.label, 1))
        base = baseline_row(rows, reference, rr.members[0])
        ref = owner[id(base)] if base is not None else None
        if ref is not None and ref is not rr:
            common = rr.run_seeds() & ref.run_seeds()
            if common:
                improvement = improvement_interval(
                    rr.strata(by_run_seed, common),
                    ref.strata(by_run_seed, common),
                    higher_is_better=False,
                    reps=reps,
                    level=level,
                    seed=row_seed(seed, rr.label, 2),
                )
        out.append(
            RunsSummary(
                rr.label,
                len(rr.agent_seeds),
                runs,
                len(strata),
                resampled,
                iqm,
                mean,
                None if ref is None else ref.label,
                improvement,
            )
        )
    return out


def _fmt(x: Interval | None, resampled: bool, signed: bool = True) -> str:
    if x is None or not math.isfinite(x.point):
        return "–"
    spec = "+.2f" if signed else ".2f"
    if not resampled:
        return f"{x.point:{spec}} (one run per stratum)"
    return f"{x.point:{spec}} [{x.low:{spec}}, {x.high:{spec}}]"


def summary_table(summaries: Sequence[RunsSummary], reference_label: str) -> list[str]:
    """Markdown lines of the summary table.

    Columns: the row, its agent seeds (``–``: none named), its runs, IQM and mean of Δm with their
    intervals, and the probability of improvement over the reference (``(reference)`` for it).
    """
    head = [
        "Method",
        "agent seeds",
        "runs",
        "IQM Δm% ↓",
        "mean Δm% ↓",
        f"P(Δm < {reference_label}) ↑",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        if s.reference == s.label:
            poi = "(reference)"
        elif s.improvement is None:
            poi = "–"
        else:
            poi = _fmt(s.improvement, s.resampled, signed=False)
        cells = [
            s.label,
            str(s.agent_seeds) if s.agent_seeds else "–",
            str(s.runs),
            _fmt(s.iqm, s.resampled),
            _fmt(s.mean, s.resampled),
            poi,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_notes(
    reference_label: str, by_run_seed: bool, reps: int = DEFAULT_REPS, level: float = 0.95
) -> str:
    """The paragraph that says what the summary table holds (strata, directions, conventions)."""
    pct = f"{100 * level:g}%"
    if by_run_seed:
        strata = (
            "the strata are the run seeds (each seed is its own instance of the benchmark), and "
            "the runs resampled within each are its agent seeds"
        )
    else:
        strata = (
            "the benchmark is one stratum (every seed trains the same problem), and the runs "
            "resampled within it are all (agent seed × run seed) cells"
        )
    return (
        "Over runs and agent seeds (Agarwal et al., NeurIPS 2021, as their `rliable`): a run is "
        "one cell, one (agent seed × run seed) pair; rows whose weighting labels differ only by an "
        "agent-seed marker (`design s0`, `design s1`, ...) are merged, and `agent seeds` counts "
        "them (`–`: the label names none: one exported agent, no agent, or a method that trains "
        f"a new agent inside every run). {pct} stratified-bootstrap percentile intervals "
        f"({reps} replicates, seeded): {strata}. IQM: mean of the middle 50% of the runs (⌊n/4⌋ "
        "cut from each end); mean: over strata of the stratum means; both lower is better. "
        f"`P(Δm < {reference_label})`: probability that a run of the row has a lower Δm than a "
        f"run of {reference_label} with the same balancer (else with sum) in the same stratum "
        "(ties ½), averaged over the strata "
        "(their common run seeds); higher is better, 0.5 is a tie."
    )


def summary_dicts(summaries: Sequence[RunsSummary]) -> dict[str, dict[str, Any]]:
    """Row label -> ``RunsSummary.to_dict``."""
    return {s.label: s.to_dict() for s in summaries}


__all__ = [
    "AGENT_SEED_LABEL",
    "SCORE",
    "RunsRow",
    "RunsSummary",
    "agent_seed_of",
    "row_seed",
    "runs_rows",
    "summarise",
    "summary_dicts",
    "summary_notes",
    "summary_table",
]
