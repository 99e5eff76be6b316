"""``build_trainer``: specs and objects build the same run; unknown names list the choices."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mtl_backends.balancers import GRADIENT_BALANCERS, make_balancer
from mtl_backends.benchmarks import BENCHMARKS, make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.config import MethodSpec, TrainConfig
from mtl_backends.features import FeatureSpec
from mtl_backends.registry import ConfigError
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import LOSS_WEIGHTINGS, make_weighting
from tests._tiny import TINY_SYNTHETIC

BENCH: dict[str, Any] = TINY_SYNTHETIC
TRAIN = TrainConfig(steps=12, batch_size=20, base_window=(2, 4))


def _from_specs(weighting: MethodSpec, balancer: MethodSpec, seed: int = 3) -> MTLTrainer:
    return build_trainer(MethodSpec("synthetic", BENCH), weighting, balancer, TRAIN, seed=seed)


def _from_objects(weighting: MethodSpec, balancer: MethodSpec, seed: int = 3) -> MTLTrainer:
    return build_trainer(
        make_benchmark("synthetic", **BENCH),
        make_weighting(weighting.name, **dict(weighting.kwargs)),
        make_balancer(balancer.name, **dict(balancer.kwargs)),
        TRAIN,
        seed=seed,
    )


@pytest.mark.parametrize(
    ("weighting", "balancer"),
    [
        (MethodSpec("igbv1"), MethodSpec("sum")),
        (MethodSpec("si"), MethodSpec("db_mtl", {"beta": 0.5})),
        (MethodSpec("tuned_static", {"weights": [1.0, 2.0, 0.5]}), MethodSpec("pcgrad")),
    ],
)
def test_specs_and_objects_train_bit_for_bit_alike(
    weighting: MethodSpec, balancer: MethodSpec
) -> None:
    a, b = _from_specs(weighting, balancer), _from_objects(weighting, balancer)
    ha, hb = a.fit(), b.fit()
    assert a.step_count == b.step_count == TRAIN.steps
    assert ha.losses == hb.losses and ha.weights == hb.weights
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert type(a.weighting) is type(b.weighting) and type(a.balancer) is type(b.balancer)


def test_the_seed_changes_the_run() -> None:
    a = _from_specs(MethodSpec("ew"), MethodSpec("sum"), seed=1)
    b = _from_specs(MethodSpec("ew"), MethodSpec("sum"), seed=2)
    assert any(
        not torch.equal(p, q)
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )


def test_spec_arguments_reach_the_objects() -> None:
    trainer = build_trainer(
        MethodSpec("synthetic", {**BENCH, "n_tasks": 2}),
        MethodSpec("tuned_static", {"weights": [1.0, 3.0]}),
        MethodSpec("cagrad", {"c": 0.7}),
        TRAIN,
        seed=0,
    )
    assert trainer.n_tasks == 2 and trainer.benchmark.config()["n_train"] == 200
    assert trainer.weighting(_context(trainer)).tolist() == [0.5, 1.5]
    assert getattr(trainer.balancer, "c", None) == 0.7


def _context(trainer: MTLTrainer) -> Any:
    trainer.forward()
    return trainer.context()


@pytest.mark.parametrize(
    ("where", "kind", "registry"),
    [
        ("benchmark", "benchmark", BENCHMARKS),
        ("weighting", "loss weighting", LOSS_WEIGHTINGS),
        ("balancer", "gradient balancer", GRADIENT_BALANCERS),
    ],
)
def test_unknown_names_list_the_choices(where: str, kind: str, registry: dict[str, Any]) -> None:
    specs = {
        "benchmark": MethodSpec("synthetic", BENCH),
        "weighting": MethodSpec("ew"),
        "balancer": MethodSpec("sum"),
    }
    specs[where] = MethodSpec("nope")
    with pytest.raises(ConfigError) as err:
        build_trainer(specs["benchmark"], specs["weighting"], specs["balancer"], TRAIN, seed=0)
    message = str(err.value)
    prefix = f"unknown {kind} 'nope'; valid choices: "
    assert message.startswith(prefix)
    assert message[len(prefix) :].split(", ") == sorted(registry)
    assert {"synthetic", "ew", "sum"} & set(registry)  # the registries hold the usual names


def test_unknown_argument_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        build_trainer(
            MethodSpec("synthetic", BENCH),
            MethodSpec("ew"),
            MethodSpec("db_mtl", {"betta": 0.5}),
            TRAIN,
            seed=0,
        )
    assert str(err.value) == (
        "gradient balancer 'db_mtl' got unknown argument(s) 'betta'; "
        "valid arguments: beta, beta_sigma, weights"
    )


def test_transform_conflict_names_both() -> None:
    with pytest.raises(ConfigError, match="transform conflict") as err:
        build_trainer(
            MethodSpec("synthetic", BENCH), MethodSpec("ew"), MethodSpec("db_mtl"), TRAIN, 0
        )
    assert "DBMTL" in str(err.value) and "EW" in str(err.value)
    assert "'log'" in str(err.value) and "'identity'" in str(err.value)


def test_features_and_reference_are_passed_on() -> None:
    spec = FeatureSpec(history=1, stride=4, ema=0.0)
    reference = {"val": {"t1_mse": 1.0, "t2_mse": 1.0, "t3_mse": 1.0}}
    trainer = build_trainer(
        MethodSpec("synthetic", BENCH),
        MethodSpec("ew"),
        MethodSpec("sum"),
        TRAIN,
        seed=0,
        reference=reference,
        features=spec,
    )
    assert trainer.progress.spec == spec
    assert trainer.progress.base_window == (2, 4)
    assert trainer.reference == reference
    result = trainer.evaluate("val")
    # Δm against unit references is 100 x the mean of (MSE - 1).
    mses = [result.metrics[f"t{t}_mse"] for t in (1, 2, 3)]
    assert result.delta_m == pytest.approx(100.0 * (sum(mses) / 3 - 1.0))
    assert trainer.evaluate("test").delta_m is None  # no reference for test


def test_default_features_are_the_default_spec() -> None:
    trainer = _from_specs(MethodSpec("ew"), MethodSpec("sum"))
    assert trainer.progress.spec == FeatureSpec()
