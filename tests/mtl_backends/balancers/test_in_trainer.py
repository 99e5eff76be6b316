"""Balancers inside ``MTLTrainer``: exact resume, transform conflicts."""

from __future__ import annotations

import io

import pytest
import torch

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_weighting
from mtl_backends.balancers import GRADIENT_BALANCERS
from mtl_backends.benchmarks import Synthetic
from mtl_backends.registry import ConfigError


def _trainer(
    bench: Synthetic, cfg: TrainConfig, balancer: str, weighting: str = "si"
) -> MTLTrainer:
    return MTLTrainer(bench, make_weighting(weighting), make_balancer(balancer), cfg, seed=3)


def _round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", sorted(GRADIENT_BALANCERS))
def test_exact_resume(name: str, tiny_benchmark: Synthetic, tiny_config: TrainConfig) -> None:
    full = _trainer(tiny_benchmark, tiny_config, name)
    full.fit(steps=12, record=False)
    first = _trainer(tiny_benchmark, tiny_config, name)
    first.fit(steps=6, record=False)
    state = _round_trip(first.state_dict())
    resumed = _trainer(tiny_benchmark, tiny_config, name)
    resumed.load_state_dict(state)
    resumed.fit(steps=6, record=False)
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert full.balancer.state_dict().keys() == resumed.balancer.state_dict().keys()


def test_db_mtl_with_identity_weighting_is_a_config_error(tiny_benchmark: Synthetic) -> None:
    with pytest.raises(ConfigError, match=r"(?s)DBMTL.*'log'.*EW.*'identity'"):
        _trainer(tiny_benchmark, TrainConfig(steps=2, batch_size=20), "db_mtl", weighting="ew")


@pytest.mark.parametrize("weighting", ["si", "igbv1"])
def test_db_mtl_runs_with_log_weightings(
    weighting: str, tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    trainer = _trainer(tiny_benchmark, tiny_config, "db_mtl", weighting=weighting)
    trainer.fit(record=False)
    assert trainer.step_count == tiny_config.steps
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def _weighting_names() -> list[str]:
    from mtl_backends.weightings import LOSS_WEIGHTINGS

    names = []
    for name in sorted(LOSS_WEIGHTINGS):
        try:  # weightings that need arguments (e.g. a policy file) are covered elsewhere
            make_weighting(name)
        except (TypeError, ValueError):
            continue
        names.append(name)
    return names


# The methods of the first release are paired with each other, with and without the flat wrapper;
# every later weighting with the balancers the comparisons put it under (sum, DB-MTL, IMGrad, MGDA;
# flat IMGrad), and every later balancer with the reference weightings, so the test stays fast as
# methods are added.
CORE_BALANCERS = ("cagrad", "db_mtl", "imgrad", "mgda", "pcgrad", "sum")
CORE_WEIGHTINGS = ("ew", "igbv1", "policy", "si")
REFERENCE_WEIGHTINGS = ("ew", "si")


def _pairs() -> list[tuple[str, str, float | None]]:
    weightings = _weighting_names()
    core = [w for w in weightings if w in CORE_WEIGHTINGS]
    pairs = [(w, b, f) for w in core for b in CORE_BALANCERS for f in (None, 2.0)]
    pairs += [
        (w, b, None)
        for w in weightings
        if w not in CORE_WEIGHTINGS
        for b in ("sum", "db_mtl", "imgrad", "mgda")
    ]
    pairs += [(w, "imgrad", 2.0) for w in weightings if w not in CORE_WEIGHTINGS]
    pairs += [
        (w, b, f)
        for w in REFERENCE_WEIGHTINGS
        for b in sorted(GRADIENT_BALANCERS)
        if b not in CORE_BALANCERS
        for f in ((None, 2.0) if w == "ew" else (None,))
    ]
    return pairs


def test_every_weighting_and_balancer_is_paired() -> None:
    pairs = _pairs()
    assert {w for w, _, _ in pairs} == set(_weighting_names())
    assert {b for _, b, _ in pairs} == set(GRADIENT_BALANCERS)


@pytest.mark.parametrize(("weighting", "balancer", "flat"), _pairs())
def test_every_pair_trains_or_names_the_conflict(
    weighting: str, balancer: str, flat: float | None, tiny_benchmark: Synthetic
) -> None:
    cfg = TrainConfig(steps=3, batch_size=20, base_window=(0, 1), flat_rho=flat)
    w, b = make_weighting(weighting), make_balancer(balancer)
    if b.requires_transform is not None and b.requires_transform != w.transform:
        with pytest.raises(ConfigError, match=type(b).__name__):
            MTLTrainer(tiny_benchmark, w, b, cfg, seed=0)
        return
    trainer = MTLTrainer(tiny_benchmark, w, b, cfg, seed=0)
    trainer.fit(record=False)
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())
