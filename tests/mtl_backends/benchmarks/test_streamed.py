"""The streamed data path: same run as in memory, resumable mid-epoch, workers change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_benchmark, make_weighting
from mtl_backends.benchmarks import Benchmark
from mtl_backends.benchmarks.streamed import EpochBatchSampler, StreamedView
from tests._tiny import TINY_SYNTHETIC

# 200 training rows, batch 30: 6 batches an epoch (20 rows dropped), so 14 steps cross two
# epoch boundaries.
CONFIG = TrainConfig(steps=14, batch_size=30, base_window=(6, 12), eval_batch_size=64)


def _bench() -> Benchmark:
    return make_benchmark("synthetic", **TINY_SYNTHETIC)


def _trainer(bench: Benchmark, config: TrainConfig = CONFIG) -> MTLTrainer:
    return MTLTrainer(bench, make_weighting("igbv1"), make_balancer("db_mtl"), config, seed=3)


def _run(trainer: MTLTrainer, steps: int) -> list[torch.Tensor]:
    return [trainer.step().losses for _ in range(steps)]


def _params(trainer: MTLTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_streamed_and_in_memory_give_the_same_run() -> None:
    bench = _bench()
    memory, streamed = _trainer(bench), _trainer(StreamedView(bench))
    assert streamed._stream is not None and memory._stream is None
    for a, b in zip(_run(memory, 14), _run(streamed, 14), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(_params(memory), _params(streamed), strict=True):
        assert torch.equal(a, b)
    m, s = memory.evaluate("val"), streamed.evaluate("val")
    assert m.metrics == s.metrics
    assert s.losses == pytest.approx(m.losses, rel=1e-6)


def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    view = StreamedView(_bench())
    whole = _trainer(view)
    expected = _run(whole, 14)
    first = _trainer(view)
    losses = _run(first, 8)  # epoch 1, batch 2 of 6
    first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = _trainer(view)
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    losses += _run(resumed, 6)
    for a, b in zip(expected, losses, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(_params(whole), _params(resumed), strict=True):
        assert torch.equal(a, b)


def test_loader_workers_do_not_change_the_run() -> None:
    view = StreamedView(_bench())
    config = TrainConfig(steps=8, batch_size=30, base_window=(0, 6), num_workers=2)
    serial = _run(_trainer(view, TrainConfig(steps=8, batch_size=30, base_window=(0, 6))), 8)
    parallel = _run(_trainer(view, config), 8)
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)


def test_the_sampler_serves_an_epoch_from_any_batch() -> None:
    sampler = EpochBatchSampler(batch_size=3)
    sampler.start(torch.tensor([4, 0, 6, 1, 3, 5, 2]), position=1)
    assert list(sampler) == [[1, 3, 5]] and len(sampler) == 1
    sampler.start(torch.tensor([4, 0, 6, 1, 3, 5, 2]), position=0)
    assert list(sampler) == [[4, 0, 6], [1, 3, 5]]


def test_a_streamed_benchmark_has_no_in_memory_split() -> None:
    with pytest.raises(NotImplementedError, match=r"streams its data .* no in-memory split 'val'"):
        StreamedView(_bench()).split("val")


def test_num_workers_must_not_be_negative() -> None:
    from mtl_backends.registry import ConfigError

    with pytest.raises(ConfigError, match=r"train\.num_workers must be >= 0, got -1"):
        TrainConfig(num_workers=-1)


def test_a_streamed_evaluation_leaves_the_runs_random_streams_alone() -> None:
    trainer = _trainer(StreamedView(_bench()))
    _run(trainer, 3)
    state = trainer._rng.torch_state.clone()
    data = trainer._data_generator.get_state()
    trainer.evaluate("val")
    assert torch.equal(trainer._rng.torch_state, state)
    assert torch.equal(trainer._data_generator.get_state(), data)
