from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_weighting
from mtl_backends.benchmarks import Synthetic
from mtl_backends.registry import ConfigError
from mtl_backends.trainer import DivergenceError
from mtl_backends.weightings import SingleTask


def _trainer(
    bench: Synthetic, cfg: TrainConfig, weighting: str = "igbv1", seed: int = 0
) -> MTLTrainer:
    return MTLTrainer(bench, make_weighting(weighting), make_balancer("sum"), cfg, seed=seed)


def _params(trainer: MTLTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_sum_equals_autograd_of_weighted_log_sum(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    trainer = _trainer(tiny_benchmark, tiny_config, "si")
    reference = _trainer(tiny_benchmark, tiny_config, "si")
    w = torch.tensor([0.5, 1.0, 2.0])
    losses = trainer.forward()
    trainer.optimizer.zero_grad()
    # Hand-written step on the reference trainer's identical batch.
    x, y = reference._next_batch()
    ref_losses = reference.benchmark.losses(reference.model(x), y)
    torch.testing.assert_close(losses, ref_losses.detach())
    (w * torch.log(ref_losses + 1e-8)).sum().backward()
    expected = [p.grad.clone() for p in reference.model.parameters()]  # type: ignore[union-attr]
    lr = trainer.lr
    trainer.apply(w)
    # Adam's first step moves every parameter by lr * sign(grad) (up to eps): compare directions.
    for p_before, p_after, g in zip(
        _params(reference), trainer.model.parameters(), expected, strict=True
    ):
        moved = p_before - p_after.detach()
        nonzero = g.abs() > 1e-6
        torch.testing.assert_close(torch.sign(moved[nonzero]), torch.sign(g[nonzero]))
        assert torch.allclose(moved[nonzero].abs(), torch.full_like(moved[nonzero], lr), rtol=1e-2)


def test_sum_jacobian_path_equals_single_backward(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    # The same weighted sum computed through per-task gradients gives the same update.
    class JacobianSum(type(make_balancer("sum"))):  # type: ignore[misc]
        needs_jacobian = True

    a = _trainer(tiny_benchmark, tiny_config)
    b = MTLTrainer(tiny_benchmark, make_weighting("igbv1"), JacobianSum(), tiny_config, seed=0)
    for _ in range(12):
        a.step()
        b.step()
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_step_equals_forward_then_apply(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    a, b = _trainer(tiny_benchmark, tiny_config), _trainer(tiny_benchmark, tiny_config)
    for _ in range(12):
        ra = a.step()
        b.forward()
        rb = b.apply()
        assert torch.equal(ra.losses, rb.losses) and torch.equal(ra.weights, rb.weights)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_same_seed_same_run_different_seed_different_run(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    runs = []
    for seed in (0, 0, 1):
        t = _trainer(tiny_benchmark, tiny_config, seed=seed)
        t.fit()
        runs.append(_params(t))
    assert all(torch.equal(x, y) for x, y in zip(runs[0], runs[1], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(runs[0], runs[2], strict=True))


def test_global_rng_use_between_steps_does_not_change_the_run(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    a, b = _trainer(tiny_benchmark, tiny_config), _trainer(tiny_benchmark, tiny_config)
    for _ in range(10):
        a.step()
        torch.rand(100)  # an agent drawing from the global RNG
        b.step()
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_resume_equals_uninterrupted_run(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig, tmp_path: Path, schedule: str
) -> None:
    cfg = dataclasses.replace(
        tiny_config, lr_schedule=schedule, lr_step_size=7, grad_clip=1.0, steps=25
    )
    full = _trainer(tiny_benchmark, cfg)
    full.fit()
    first = _trainer(tiny_benchmark, cfg)
    first.fit(steps=13)  # mid-epoch (10 steps per epoch), mid-base-window arithmetic done
    first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = _trainer(tiny_benchmark, cfg, seed=0)
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    resumed.fit()
    assert resumed.step_count == full.step_count == 25
    assert all(torch.equal(x, y) for x, y in zip(_params(full), _params(resumed), strict=True))
    assert resumed.evaluate("test").metrics == full.evaluate("test").metrics


def test_checkpoint_write_is_atomic(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig, tmp_path: Path
) -> None:
    t = _trainer(tiny_benchmark, tiny_config)
    t.step()
    t.save_checkpoint(tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_bad_weights_are_rejected(tiny_benchmark: Synthetic, tiny_config: TrainConfig) -> None:
    t = _trainer(tiny_benchmark, tiny_config)
    t.forward()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        t.apply(torch.ones(2))
    with pytest.raises(ValueError, match="finite"):
        t.apply(torch.tensor([1.0, float("nan"), 1.0]))
    t.apply(torch.ones(3))  # the step is still pending and can be finished


def test_phase_order_is_enforced(tiny_benchmark: Synthetic, tiny_config: TrainConfig) -> None:
    t = _trainer(tiny_benchmark, tiny_config)
    with pytest.raises(RuntimeError, match="forward"):
        t.apply()
    t.forward()
    with pytest.raises(RuntimeError, match="twice"):
        t.forward()
    with pytest.raises(RuntimeError, match="apply"):
        t.state_dict()


def test_nan_loss_names_the_task(tiny_benchmark: Synthetic, tiny_config: TrainConfig) -> None:
    t = _trainer(tiny_benchmark, tiny_config)
    with torch.no_grad():
        for p in t.model.heads[1].parameters():
            p.fill_(float("nan"))
    with pytest.raises(DivergenceError, match="t2"):
        t.forward()


def test_loss_at_lower_bound_under_log_names_the_task(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    t = _trainer(tiny_benchmark, tiny_config, "si")
    t._lower_bounds = torch.tensor([0.0, 1e9, 0.0])  # task t2's loss is below this bound
    t.forward()
    with pytest.raises(ValueError, match="task 't2'"):
        t.apply()


def test_transform_conflict_names_both(tiny_benchmark: Synthetic, tiny_config: TrainConfig) -> None:
    class NeedsLog(type(make_balancer("sum"))):  # type: ignore[misc]
        requires_transform = "log"

    with pytest.raises(ConfigError, match=r"NeedsLog requires the 'log'.*EW declares 'identity'"):
        MTLTrainer(tiny_benchmark, make_weighting("ew"), NeedsLog(), tiny_config)


def test_single_task_trains_only_its_head(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    t = MTLTrainer(tiny_benchmark, SingleTask(1), make_balancer("sum"), tiny_config)
    before = [torch.cat([p.detach().flatten() for p in h.parameters()]) for h in t.model.heads]
    t.fit(steps=3)
    after = [torch.cat([p.detach().flatten() for p in h.parameters()]) for h in t.model.heads]
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert not torch.equal(before[1], after[1])


def test_evaluate_reports_delta_m_against_reference(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    t = _trainer(tiny_benchmark, tiny_config)
    plain = t.evaluate("test")
    assert plain.delta_m is None
    ref = {"test": {k: v * 2 for k, v in plain.metrics.items()}}
    t.reference = ref
    result = t.evaluate("test")
    assert result.delta_m == pytest.approx(-50.0)
    assert result.delta_p == pytest.approx(50.0)


def test_fit_records_history_and_evaluations(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    t = _trainer(tiny_benchmark, tiny_config)
    seen: list[int] = []
    history = t.fit(callbacks=[lambda tr, r: seen.append(r.step)], eval_every=7)
    assert seen == list(range(20))
    assert len(history.weights) == 20 and len(history.losses[0]) == 3
    assert [e.step for e in history.evals] == [7, 14, 20]
    # IGBv1 weights are 1 until the base window (steps 4..7) ends, then sum to T.
    assert history.weights[7] == [1.0, 1.0, 1.0]
    assert abs(sum(history.weights[8]) - 3.0) < 1e-5 and history.weights[8] != [1.0, 1.0, 1.0]


def test_batch_larger_than_data_is_rejected(tiny_benchmark: Synthetic) -> None:
    with pytest.raises(ConfigError, match="larger than the training split"):
        _trainer(tiny_benchmark, TrainConfig(batch_size=10_000))


# -- Careless input and exploding runs (issue 18) --------------------------------------------------


def _state(trainer: MTLTrainer) -> dict[str, object]:
    return {"state": trainer.state_dict(), "data": trainer._data_generator.get_state()}


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([float("nan"), 1.0, 1.0], "weights must be finite"),
        ([1.0, float("inf"), 1.0], "weights must be finite"),
        ([1.0, 1.0], r"weights must have shape \(3,\)"),
        (["a", 1.0, 1.0], "weights must be 3 numbers"),
    ],
)
def test_rejected_step_weights_leave_the_trainer_as_it_was(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig, weights: list[object], match: str
) -> None:
    t = _trainer(tiny_benchmark, tiny_config)
    t.fit(steps=9)  # past the base window: gaps, snapshots and weights exist
    before = _state(t)
    with pytest.raises(ValueError, match=match):
        t.step(weights=weights)  # type: ignore[arg-type]
    assert _same(_state(t), before)  # no batch drawn, nothing absorbed
    # Still usable, and its next step is the one an untouched trainer takes.
    reference = _trainer(tiny_benchmark, tiny_config)
    reference.fit(steps=9)
    assert torch.equal(t.step().losses, reference.step().losses)
    assert all(torch.equal(a, b) for a, b in zip(_params(t), _params(reference), strict=True))


def test_exploding_run_is_divergence_not_a_normal_result(tiny_benchmark: Synthetic) -> None:
    cfg = TrainConfig(steps=20, batch_size=20, base_window=(4, 8), lr=1e3)
    t = _trainer(tiny_benchmark, cfg)
    with pytest.raises(
        DivergenceError, match=r"exploding loss at step \d+: task\(s\) t1 \("
    ) as err:
        t.fit()
    assert "train.divergence_factor" in str(err.value) and "lower train.lr" in str(err.value)
    # Caught before the base losses existed: a base-loss reference would have come too late.
    assert cfg.base_window is not None and t.step_count < cfg.base_window[1]
    # With the check off the same run goes on with finite but absurd losses.
    off = _trainer(tiny_benchmark, dataclasses.replace(cfg, divergence_factor=None))
    history = off.fit(steps=t.step_count + 1)
    assert max(history.losses[-1]) > 1e3 * history.losses[0][0]


def test_divergence_check_changes_no_valid_run(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    checked = _trainer(tiny_benchmark, tiny_config).fit()
    unchecked = _trainer(
        tiny_benchmark, dataclasses.replace(tiny_config, divergence_factor=None)
    ).fit()
    assert checked.losses == unchecked.losses and checked.weights == unchecked.weights


def test_divergence_reference_survives_a_resume(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    t = _trainer(tiny_benchmark, tiny_config)
    t.fit(steps=3)
    state = t.state_dict()
    assert torch.equal(state["first_margin"], t._first_margin)  # type: ignore[arg-type]
    resumed = _trainer(tiny_benchmark, tiny_config)
    resumed.load_state_dict(state)
    assert resumed._explosion_limit is not None
    assert torch.equal(resumed._explosion_limit, t._explosion_limit)  # type: ignore[arg-type]
    # A state from before the check (no first_margin) resumes; the next step becomes the reference.
    old = {k: v for k, v in state.items() if k != "first_margin"}
    legacy = _trainer(tiny_benchmark, tiny_config)
    legacy.load_state_dict(old)
    assert legacy._explosion_limit is None
    legacy.step()
    assert legacy._explosion_limit is not None
