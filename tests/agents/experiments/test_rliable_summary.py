"""``agents.experiments.rliable_summary``: agent-seed rows, strata and the summary, by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agents.experiments import report
from agents.experiments.evaluate import evaluate, evaluation_experiment, format_table
from agents.experiments.grid import plan_grid
from agents.experiments.plots import write_plots
from agents.experiments.rliable_summary import (
    agent_seed_of,
    runs_rows,
    summarise,
    summary_dicts,
    summary_table,
)
from agents.experiments.rows import Row, benchmark_rows
from tests.agents._configs import TINY_ENV
from tests.agents.experiments import _records

NAMES = {"IGBv1": "igbv1", "EW": "ew", "sum": "sum", "DB-MTL": "db_mtl"}


def _row(weighting: str, values: dict[int, float], balancer: str = "sum") -> Row:
    label = weighting if balancer == "sum" else f"{weighting} + {balancer}"
    records: dict[int, dict[str, Any]] = {
        seed: {"status": "ok", "delta_m": v, "train_wall_time_s": 1.0} for seed, v in values.items()
    }
    return Row(
        label,
        weighting,
        balancer,
        NAMES.get(weighting, "policy"),
        NAMES[balancer],
        False,
        records,
    )


# IGBv1 and two agent seeds of a policy on run seeds 0-2 (Δm, lower is better).
IGB = {0: 2.0, 1: 3.0, 2: 4.0}
S0 = {0: 0.0, 1: 3.5, 2: 2.0}
S1 = {0: 2.5, 1: 2.0, 2: 4.0}


def _rows() -> list[Row]:
    return [_row("IGBv1", IGB), _row("policy s0", S0), _row("policy s1", S1)]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("generalist s0", ("generalist", 0)),
        ("generalist s12", ("generalist", 12)),
        ("learned policy, agent seed 1", ("learned policy", 1)),
        ("learned policy (agent seed 2)", ("learned policy", 2)),
        ("specialist (T=3) s1", ("specialist (T=3)", 1)),
        ("IGBv2", None),
        ("tuned static (multi_digits)", None),
        ("s0", None),  # a marker needs a design before it
        ("learned policy (agent seed 2", None),  # unbalanced parenthesis
        ("policy s0x", None),
    ],
)
def test_agent_seed_markers(label: str, expected: tuple[str, int] | None) -> None:
    assert agent_seed_of(label) == expected


def test_agent_seed_rows_merge_per_design_and_balancer() -> None:
    rows = [
        _row("IGBv1", IGB),
        _row("policy s1", S1),
        _row("policy s0", S0),
        _row("policy s0", S0, "DB-MTL"),
        _row("other s3", S0),
    ]
    merged = runs_rows(rows)
    assert [(r.label, r.weighting, r.agent_seeds) for r in merged] == [
        ("IGBv1", "IGBv1", ()),
        ("policy", "policy", (0, 1)),  # at its first member's place, seeds in order
        ("policy s0 + DB-MTL", "policy s0", (0,)),  # one agent seed alone keeps its label
        ("other s3", "other s3", (3,)),
    ]
    assert merged[1].scores() == {
        (0, 0): 0.0, (0, 1): 3.5, (0, 2): 2.0, (1, 0): 2.5, (1, 1): 2.0, (1, 2): 4.0,
    }  # fmt: skip


def test_the_same_agent_seed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="both name agent seed 0"):
        runs_rows([_row("policy s0", S0), _row("policy, agent seed 0", S1)])


def test_strata_by_run_seed_or_one_per_benchmark() -> None:
    policy = runs_rows(_rows())[1]
    by_seed = [s.tolist() for s in policy.strata(by_run_seed=True)]
    assert by_seed == [[0.0, 2.5], [3.5, 2.0], [2.0, 4.0]]
    assert [s.tolist() for s in policy.strata(by_run_seed=False)] == [
        [0.0, 2.5, 3.5, 2.0, 2.0, 4.0]
    ]
    assert [s.tolist() for s in policy.strata(by_run_seed=True, seeds={2})] == [[2.0, 4.0]]


def test_summary_by_instance_hand_values() -> None:
    ref, policy = summarise(_rows(), "igbv1", by_run_seed=True, reps=500)
    # Pooled 0, 2, 2, 2.5, 3.5, 4: one cut each end -> IQM (2 + 2 + 2.5 + 3.5) / 4 = 2.5; mean of
    # the instance means 1.25, 2.75, 3 = 7 / 3. Against IGBv1 instance by instance: seed 0: 0 < 2
    # and 2.5 > 2 -> ½; seed 1: ½; seed 2: 2 < 4 and a tie -> ¾; averaged 7 / 12.
    assert (policy.label, policy.agent_seeds, policy.runs, policy.strata) == ("policy", 2, 6, 3)
    assert policy.iqm is not None and policy.iqm.point == pytest.approx(2.5)
    assert policy.mean is not None and policy.mean.point == pytest.approx(7.0 / 3.0)
    assert policy.improvement is not None
    assert policy.improvement.point == pytest.approx(7.0 / 12.0)
    assert policy.reference == "IGBv1" and policy.resampled
    # The reference: one run per instance, nothing to resample, no probability against itself.
    assert ref.reference == "IGBv1" and ref.improvement is None and not ref.resampled
    assert ref.iqm is not None and ref.iqm.point == ref.iqm.low == ref.iqm.high == 3.0


def test_summary_with_one_stratum_compares_every_pair() -> None:
    _, policy = summarise(_rows(), "igbv1", by_run_seed=False, reps=500)
    # Pairs with a lower Δm than IGBv1's 2, 3, 4 (ties ½): 3 + 1 + 2.5 + 2 + 2.5 + 0.5 of 18.
    assert policy.improvement is not None
    assert policy.improvement.point == pytest.approx(11.5 / 18.0)
    assert policy.mean is not None and policy.mean.point == pytest.approx(14.0 / 6.0)
    assert policy.strata == 1 and policy.resampled


def test_summary_is_reproducible_and_independent_of_the_other_rows() -> None:
    a = summarise(_rows(), "igbv1", by_run_seed=True, reps=300)
    b = summarise([*_rows(), _row("EW", {0: 9.0, 1: 9.0, 2: 9.0})], "igbv1", by_run_seed=True,
                  reps=300)  # fmt: skip
    assert a == b[:2]
    assert summarise(_rows(), "igbv1", by_run_seed=True, reps=300, seed=1) != a


def test_summary_table_and_json() -> None:
    summaries = summarise(_rows(), "igbv1", by_run_seed=True, reps=500)
    lines = summary_table(summaries, "IGBv1")
    assert lines[0] == (
        "| Method | agent seeds | runs | IQM Δm% ↓ | mean Δm% ↓ | P(Δm < IGBv1) ↑ |"
    )
    assert lines[2] == (
        "| IGBv1 | – | 3 | +3.00 (one run per stratum) | +3.00 (one run per stratum) "
        "| (reference) |"
    )
    assert re.fullmatch(
        r"\| policy \| 2 \| 6 \| \+2\.50 \[[-+]\d\.\d\d, [-+]\d\.\d\d\] "
        r"\| \+2\.33 \[[-+]\d\.\d\d, [-+]\d\.\d\d\] \| 0\.58 \[\d\.\d\d, \d\.\d\d\] \|",
        lines[3],
    ), lines[3]
    data = json.loads(json.dumps(summary_dicts(summaries)))
    assert data["policy"]["p_improvement"]["point"] == pytest.approx(7.0 / 12.0)
    assert data["IGBv1"]["p_improvement"] is None and data["IGBv1"]["agent_seeds"] == 0


def test_rows_are_compared_with_the_reference_under_their_balancer() -> None:
    rows = [
        *_rows(),
        _row("IGBv1", {0: 1.0, 1: 1.0, 2: 1.0}, "DB-MTL"),
        _row("policy s0", {0: 0.5, 1: 2.0, 2: 0.5}, "DB-MTL"),
        _row("policy s1", {0: 1.0, 1: 0.5, 2: 3.0}, "DB-MTL"),
    ]
    by_label = {s.label: s for s in summarise(rows, "IGBv1", by_run_seed=True, reps=200)}
    db = by_label["policy + DB-MTL"]
    # Per instance against IGBv1 + DB-MTL's 1: (1 + ½) / 2, (0 + 1) / 2, (1 + 0) / 2.
    assert db.reference == "IGBv1 + DB-MTL" and db.improvement is not None
    assert db.improvement.point == pytest.approx((0.75 + 0.5 + 0.5) / 3)


# ---------------------------------------------------------------------------------------------
# In the reports
# ---------------------------------------------------------------------------------------------


def test_compare_report_has_the_summary_below_each_table(tmp_path: Path) -> None:
    config, plan, records = _records.setup()
    text = report.write_markdown(config, plan, records, tmp_path / "results.md", {})
    lines = text.splitlines()
    i = lines.index("### Over runs and agent seeds")
    assert "the benchmark is one stratum (every seed trains the same problem)" in lines[i + 2]
    table = lines[i + 4 : i + 11]
    assert table[0].endswith("| P(Δm < IGBv1) ↑ |")
    # Hand values: EW 3, 4, 5 (n = 3: IQM = mean 4); its Δm is lower than IGBv1's 2, 2.5, 3 in
    # no pair and ties once: ½ / 9. SI 2.5, 4, 3: 1 + ½ + ½ of 9. SI + DB-MTL failed at seed 2:
    # 1.5, 3 against IGBv1 + DB-MTL's 1, 2 on seeds 0-1: one pair of 4.
    expected = {
        "EW": ("+4.00", "0.06"),
        "IGBv1": ("+2.50", None),
        "SI": ("+3.17", "0.22"),
        "IGBv1 + DB-MTL": ("+2.00", None),
        "SI + DB-MTL": ("+2.25", "0.25"),
    }
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        iqm, poi = expected[cells[0]]
        assert cells[3].startswith(iqm + " [") and cells[1] == "–", line
        assert cells[5] == "(reference)" if poi is None else cells[5].startswith(poi + " ["), line


def test_profile_is_drawn_for_agent_seeds_without_the_delta_m_plots(tmp_path: Path) -> None:
    # With the Δm plots: test_report's write_report test. Without, and no agent seeds: nothing.
    _, plan, records = _records.setup()
    quiet = _records.experiment(plots={"delta_m_bars": False, "trajectory_points": 0})
    assert write_plots(quiet, plan_grid(quiet), records, tmp_path) == []
    # Two agent seeds of one design: the profile is drawn even without the Δm plots.
    seeded = _records.experiment(
        weightings=[
            "igbv1",
            {"name": "si", "label": "design s0"},
            {"name": "ew", "label": "design s1"},
        ],
        balancers=["sum"],
        plots={"delta_m_bars": False, "trajectory_points": 0},
    )
    plan = plan_grid(seeded)
    values = {"IGBv1": 2.0, "design s0": 1.0, "design s1": 3.0}
    recs = {
        c.key: _records.ok_record((values[c.row] + c.seed, 0, 1, 1, 0.5, 0.5)) for c in plan.cells
    }
    written = write_plots(seeded, plan, recs, tmp_path)
    assert [p.name for p in written] == ["performance_profile_syn.png"]
    assert written[0].stat().st_size > 5000
    rows = benchmark_rows(seeded.benchmarks[0], plan, recs)
    assert [r.label for r in runs_rows(rows)] == ["IGBv1", "design"]


def test_evaluation_experiment_labels_each_agent_seed() -> None:
    env = TINY_ENV
    one = evaluation_experiment(env, "p0", [1000, 1001])
    assert [w.display for w in one.weightings][-1] == "learned policy"
    three = evaluation_experiment(env, "p0", [1000, 1001], agent_seeds=["p1", "p2"])
    policies = [w for w in three.weightings if w.name == "policy"]
    assert [(w.display, w.kwargs["path"]) for w in policies] == [
        ("learned policy s0", "p0"),
        ("learned policy s1", "p1"),
        ("learned policy s2", "p2"),
    ]
    assert {agent_seed_of(w.display)[0] for w in policies} == {"learned policy"}  # type: ignore[index]


def test_evaluate_table_adds_the_agent_seed_summary() -> None:
    rows = [_row("EW", {0: 9.0, 1: 9.0, 2: 9.0}), *_rows()]
    rollouts = {w: {"mean": 1.0, "std": 0.0} for w in ("policy", "igbv1", "ew")}
    rollouts["policy_vs_igbv1"] = {"mean": 0.0, "std": 0.0, "low": 0.0, "high": 0.0}
    results = {"instances": [0, 1, 2], "rollouts": rollouts}
    assert "Over " not in format_table(results, rows)
    text = format_table({**results, "agent_seeds": ["a", "b"], "reference": "igbv1"}, rows)
    assert "Over 2 agent seeds × 3 instances" in text
    assert "the strata are the run seeds (each seed is its own instance" in text
    assert "| IGBv1 | – | 3 | +3.00 (one run per stratum)" in text
    assert re.search(r"\| policy \| 2 \| 6 \| \+2\.50 \[.*\| 0\.58 \[", text)


def test_evaluate_checks_the_reference_and_the_agent_seeds_env(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reference 'mgda' is not a baseline"):
        evaluate(tmp_path, reference="mgda")
    for name, seed in (("a", 1), ("b", 2)):
        (tmp_path / name).mkdir()
        env = {"benchmark": {"name": "synthetic"}, "test_set": [seed]}
        (tmp_path / name / "policy.json").write_text(json.dumps({"env_config": env}))
    with pytest.raises(ValueError, match="was trained for another env"):
        evaluate(tmp_path / "a", agent_seeds=[tmp_path / "b"], out=tmp_path / "e.json")
    assert not (tmp_path / "e.json").exists()
