"""``agents.experiments.config``: the experiment schema, its errors and display labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.experiments.config import (
    BenchmarkEntry,
    CellSelector,
    ExperimentConfig,
    MethodEntry,
    config_hash,
    digest,
    experiment_from_dict,
    load_experiment,
    method_label,
    validate_experiment,
)
from agents.experiments.grid import Cell
from mtl_backends.balancers import GRADIENT_BALANCERS
from mtl_backends.config import to_dict
from mtl_backends.registry import ConfigError
from mtl_backends.weightings import LOSS_WEIGHTINGS

LABELS = {
    "ew": "EW",
    "si": "SI",
    "igbv1": "IGBv1",
    "igbv2": "IGBv2",
    "tuned_static": "tuned static",
    "policy": "learned policy",
    "sum": "sum",
    "db_mtl": "DB-MTL",
    "imgrad": "IMGrad",
    "mgda": "MGDA",
    "pcgrad": "PCGrad",
    "cagrad": "CAGrad",
    "uw": "UW",
    "dwa": "DWA",
    "rlw": "RLW",
    "gls": "GLS",
    "gradnorm": "GradNorm",
    "famo": "FAMO",
    "imtl_l": "IMTL-L",
    "nash_mtl": "Nash-MTL",
    "imtl_g": "IMTL-G",
    "aligned_mtl": "Aligned-MTL",
    "upgrad": "UPGrad",
    "dualproj": "DualProj",
    "fairgrad": "FairGrad",
    "gradvac": "GradVac",
    "config": "ConFIG",
    "torchjd_mgda": "MGDA (TorchJD)",
    "torchjd_pcgrad": "PCGrad (TorchJD)",
    "torchjd_cagrad": "CAGrad (TorchJD)",
}


def _data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"benchmarks": ["synthetic"], "weightings": ["ew", "igbv1"]}
    data.update(changes)
    return data


def _error(**changes: Any) -> str:
    with pytest.raises(ConfigError) as info:
        experiment_from_dict(_data(**changes))
    return str(info.value)


@pytest.mark.parametrize(("name", "label"), sorted(LABELS.items()))
def test_method_label(name: str, label: str) -> None:
    assert method_label(name) == label


def test_every_registered_method_has_a_pinned_label() -> None:
    assert set(LOSS_WEIGHTINGS) | set(GRADIENT_BALANCERS) == set(LABELS)
    weightings = [method_label(n) for n in LOSS_WEIGHTINGS]
    assert len(set(weightings)) == len(weightings)  # rows need distinct default labels


def test_method_label_of_an_unknown_name_is_the_name() -> None:
    assert method_label("my_method") == "my_method"


def test_defaults() -> None:
    config = experiment_from_dict(_data())
    assert config.benchmarks == (BenchmarkEntry("synthetic"),)
    assert config.weightings == (MethodEntry("ew"), MethodEntry("igbv1"))
    assert config.balancers == (MethodEntry("sum"),)
    assert (config.seeds, config.selection, config.baseline) == ((0, 1, 2), "final", "igbv1")
    assert config.stl_cache == ".igb-cache/stl"
    assert config.plots.trajectory_points == 100 and config.plots.delta_m_bars


def test_entries_split_fields_from_constructor_arguments() -> None:
    config = experiment_from_dict(
        _data(
            benchmarks=[
                {"name": "synthetic", "label": "s", "n_tasks": 2, "train": {"steps": 7}},
            ],
            weightings=[{"name": "tuned_static", "weights": [1.0, 2.0], "label": "ts"}],
            balancers=[{"name": "mgda", "flat_rho": 0.5}, {"name": "db_mtl", "beta": 0.3}],
        )
    )
    bench = config.benchmarks[0]
    assert (bench.name, dict(bench.kwargs), bench.label, bench.train.steps) == (
        "synthetic",
        {"n_tasks": 2},
        "s",
        7,
    )
    assert config.weightings[0] == MethodEntry("tuned_static", {"weights": [1.0, 2.0]}, "ts")
    assert config.balancers[0] == MethodEntry("mgda", {}, None, 0.5)
    assert config.balancers[0].display == "F-MGDA"
    assert config.balancers[1].kwargs == {"beta": 0.3}


def test_the_kwargs_form_of_cell_files_is_read() -> None:
    config = experiment_from_dict(
        _data(weightings=[{"name": "tuned_static", "kwargs": {"weights": [1.0, 2.0]}}])
    )
    assert config.weightings[0].kwargs == {"weights": [1.0, 2.0]}


def test_to_dict_round_trips() -> None:
    config = experiment_from_dict(
        _data(
            weightings=["ew", {"name": "tuned_static", "weights": [1.0, 2.0, 3.0]}],
            balancers=["sum", {"name": "mgda", "flat_rho": 1.0}],
        )
    )
    assert experiment_from_dict(to_dict(config)) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bogus": 1}, "unknown key(s) 'bogus'; valid keys: benchmarks, weightings, balancers"),
        ({"weightings": ["nope"]}, "experiment.weightings[0]: unknown loss weighting 'nope'; "
         "valid choices: dwa, ew, famo, gls, gradnorm, igbv1, igbv2, imtl_l, policy, rlw, si, "
         "tuned_static, uw"),
        ({"balancers": ["sum", "nope"]}, "experiment.balancers[1]: unknown gradient balancer "
         "'nope'; valid choices: aligned_mtl, cagrad, config, db_mtl, dualproj, fairgrad, "
         "gradvac, imgrad, imtl_g, mgda, nash_mtl, pcgrad, sum, torchjd_cagrad, torchjd_mgda, "
         "torchjd_pcgrad, upgrad"),
        ({"benchmarks": ["nope"]}, "experiment.benchmarks[0]: unknown benchmark 'nope'; "
         "valid choices: cityscapes, multi_digits, nyuv2, qm9, qm9_graph, synthetic, toy"),
        ({"balancers": [{"name": "db_mtl", "betta": 0.5}]}, "gradient balancer 'db_mtl' got "
         "unknown argument(s) 'betta'; valid arguments: "),
        ({"benchmarks": [{"name": "synthetic", "n_task": 2}]}, "benchmark 'synthetic' got "
         "unknown argument(s) 'n_task'"),
        ({"selection": "best"},
         "unknown selection 'best'; valid choices: final, best_val, mean_last_10"),
        ({"benchmarks": [{"name": "synthetic", "selection": "last"}]},
         "experiment.benchmarks[0]: unknown selection 'last'"),
        ({"selection": "best_val"}, "selection 'best_val' needs eval_every >= 1"),
        ({"selection": "best_val", "eval_every": 0}, "needs eval_every >= 1"),
        ({"selection": "mean_last_10"}, "selection 'mean_last_10' needs eval_every >= 1"),
        ({"benchmarks": [{"name": "synthetic", "train": {"steps": 90}}],
          "selection": "mean_last_10", "eval_every": 10},
         "averages the last 10 evaluations; eval_every 10 gives fewer in 90 steps (at most 9)"),
        ({"weightings": ["ew", {"name": "si", "label": "EW"}]},
         "two weightings share the label 'EW'; give one a distinct 'label'"),
        ({"benchmarks": ["synthetic", "synthetic"]}, "two benchmarks share the label 'synthetic'"),
        ({"balancers": ["mgda", {"name": "mgda", "label": "MGDA"}]},
         "two balancers share the label 'MGDA'"),
        ({"weightings": [{"name": "ew", "flat_rho": 1.0}]}, "flat_rho belongs to a balancer entry"),
        ({"balancers": [{"name": "mgda", "flat_rho": -1.0}]}, "flat_rho must be >= 0, got -1.0"),
        ({"seeds": [1, 1]}, "experiment.seeds: duplicate seeds in [1, 1]"),
        ({"seeds": []}, "experiment.seeds: give at least one seed"),
        ({"weightings": []}, "experiment.weightings: give at least one weighting"),
        ({"balancers": []}, "experiment.balancers: give at least one balancer"),
        ({"benchmarks": []}, "experiment.benchmarks: give at least one benchmark"),
        ({"benchmarks": "synthetic"}, "experiment.benchmarks: expected a list, got 'synthetic'"),
        ({"weightings": [3]}, "experiment.weightings[0]: expected a name or a mapping"),
        ({"weightings": [{"label": "x"}]}, "experiment.weightings[0]: a mapping needs a 'name'"),
        ({"plots": {"trajectory_points": -1}}, "plots.trajectory_points must be >= 0"),
        ({"plots": {"colour": "red"}}, "unknown key(s) 'colour'"),
    ],
)  # fmt: skip
def test_errors_name_the_problem(changes: dict[str, Any], message: str) -> None:
    assert message in _error(**changes)


def test_missing_policy_path_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    message = _error(weightings=[{"name": "policy", "path": str(path)}])
    assert f"experiment.weightings[0]: policy path {str(path)!r} does not exist" in message
    assert "igb export" in message


def test_flat_rho_on_a_weighting_entry_object() -> None:
    config = ExperimentConfig((BenchmarkEntry("synthetic"),), (MethodEntry("ew", flat_rho=1.0),))
    with pytest.raises(ConfigError, match=r"weightings\[0\]: flat_rho belongs to a balancer"):
        validate_experiment(config)


def test_eval_every_of_a_final_table_is_dropped() -> None:
    config = experiment_from_dict(
        _data(
            benchmarks=[
                "synthetic",
                {"name": "synthetic", "label": "b", "selection": "best_val"},
                {"name": "synthetic", "label": "c", "selection": "best_val", "eval_every": 3},
                {"name": "synthetic", "label": "d", "selection": "mean_last_10"},
            ],
            eval_every=50,
        )
    )
    assert [config.selection_of(b) for b in config.benchmarks] == [
        ("final", None),
        ("best_val", 50),
        ("best_val", 3),
        ("mean_last_10", 50),
    ]


def test_nested_errors_name_the_entry() -> None:
    message = _error(
        benchmarks=["synthetic", {"name": "synthetic", "label": "b", "train": {"stepz": 1}}]
    )
    assert "unknown key(s) 'stepz'" in message
    assert "benchmarks[1]" in message


def test_baseline_label() -> None:
    assert experiment_from_dict(_data()).baseline_label == "IGBv1"
    labelled = _data(weightings=["ew", {"name": "igbv1", "label": "heuristic"}])
    assert experiment_from_dict(labelled).baseline_label == "heuristic"
    by_label = _data(
        weightings=["ew", {"name": "igbv1", "label": "heuristic"}], baseline="heuristic"
    )
    assert experiment_from_dict(by_label).baseline_label == "heuristic"
    assert experiment_from_dict(_data(baseline="si")).baseline_label == "si"  # not in the grid


def test_cell_selector_matches_labels_names_and_seeds() -> None:
    cell = Cell(
        BenchmarkEntry("synthetic", label="syn"),
        MethodEntry("igbv1"),
        MethodEntry("db_mtl"),
        seed=2,
    )
    assert CellSelector().matches(cell)
    for hit in (
        CellSelector(benchmark="syn"),
        CellSelector(benchmark="synthetic"),
        CellSelector(weighting="IGBv1"),
        CellSelector(weighting="igbv1", balancer="DB-MTL", seed=2),
        CellSelector(balancer="db_mtl"),
    ):
        assert hit.matches(cell), hit
    for miss in (
        CellSelector(benchmark="other"),
        CellSelector(weighting="ew"),
        CellSelector(balancer="sum"),
        CellSelector(seed=0),
        CellSelector(weighting="igbv1", seed=1),
    ):
        assert not miss.matches(cell), miss


def test_config_hash_and_digest() -> None:
    a = experiment_from_dict(_data())
    assert config_hash(a) == config_hash(experiment_from_dict(_data()))
    assert len(config_hash(a)) == 16
    assert config_hash(a) != config_hash(experiment_from_dict(_data(seeds=[0, 1])))
    assert config_hash(a) != config_hash(experiment_from_dict(_data(weightings=["igbv1", "ew"])))
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 1.5})
    assert len(digest({})) == 64


def test_load_experiment(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("benchmarks: [synthetic]\nweightings: [ew]\nseeds: [4]\n")
    config = load_experiment(path)
    assert config.seeds == (4,) and config.weightings == (MethodEntry("ew"),)
    path.write_text("benchmarks: [synthetic]\nweightings: [ew]\nseedz: [4]\n")
    with pytest.raises(ConfigError, match=r"e\.yaml: unknown key\(s\) 'seedz'"):
        load_experiment(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_experiment(tmp_path / "missing.yaml")
