"""Searching constant task weights on training seeds (``igb tune-static``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtl_backends.balancers import Sum
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.config import MethodSpec, RunConfig, TrainConfig, from_dict
from mtl_backends.stl import stl_reference
from mtl_backends.trainer import MTLTrainer
from mtl_backends.tuning import static_candidates, tune_static_weights
from mtl_backends.weightings import make_weighting
from mtl_backends.weightings.tuned_static import TunedStatic
from tests._tiny import TINY_SYNTHETIC, write_tune_config

BENCH = MethodSpec("synthetic", {"n_tasks": 3, **TINY_SYNTHETIC})
TRAIN = TrainConfig(steps=20, batch_size=20, base_window=(4, 8))


def test_static_candidates_are_distinct_and_sum_to_t() -> None:
    cands = static_candidates(2, logits=(-1.0, 0.0, 1.0))
    # logit differences -2..2 give 5 distinct weight vectors; equal weights first
    assert len(cands) == 5
    assert cands[0] == [1.0, 1.0]
    for c in cands:
        assert sum(c) == pytest.approx(2.0)
        assert min(c) > 0
    full = static_candidates(3)
    assert len({tuple(round(v, 9) for v in c) for c in full}) == len(full)
    sub = static_candidates(3, max_candidates=7, seed=1)
    assert len(sub) == 7 and sub[0] == [1.0, 1.0, 1.0]
    assert sub == static_candidates(3, max_candidates=7, seed=1)
    assert all(c in full for c in sub)


def test_search_picks_the_brute_force_best(tmp_path: Path) -> None:
    candidates = [[1.0, 1.0, 1.0], [0.2, 0.8, 2.0], [2.0, 0.5, 0.5]]
    seeds = [100, 101]
    result = tune_static_weights(
        BENCH, TRAIN, seeds, candidates=candidates, stl_cache=tmp_path / "stl"
    )
    brute = []
    for cand in candidates:
        dms = []
        for seed in seeds:
            ref = stl_reference(BENCH, TRAIN, seed, tmp_path / "stl")
            bench = make_benchmark(BENCH.name, **dict(BENCH.kwargs))
            trainer = MTLTrainer(bench, TunedStatic(cand), Sum(), TRAIN, seed=seed, reference=ref)
            trainer.fit(record=False)
            dm = trainer.evaluate("val").delta_m
            assert dm is not None
            dms.append(dm)
        brute.append(float(np.mean(dms)))
    assert result.scores == pytest.approx(brute, abs=0.0)
    best = int(np.argmin(brute))
    assert result.weights == pytest.approx(TunedStatic(candidates[best]).weights.tolist())
    assert result.score == brute[best]
    assert result.seeds == seeds and len(result.per_seed) == 3


def test_igb_tune_static_writes_a_usable_snippet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agents.cli import main

    path = write_tune_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    out = tmp_path / "w.yaml"
    code = main(["tune-static", str(path), "--seeds", "5", "--candidates", "3", "--out", str(out)])
    assert code == 0
    assert "val Δm" in capsys.readouterr().out
    snippet = yaml.safe_load(out.read_text())
    assert snippet["weighting"]["name"] == "tuned_static"
    assert sum(snippet["weighting"]["weights"]) == pytest.approx(3.0, abs=1e-5)
    run = from_dict(RunConfig, {**config, **snippet})
    weighting = make_weighting(run.weighting.name, **dict(run.weighting.kwargs))
    assert isinstance(weighting, TunedStatic)
    torch.testing.assert_close(weighting.weights.sum(), torch.tensor(3.0))
