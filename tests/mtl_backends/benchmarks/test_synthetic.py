from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.benchmarks import BENCHMARKS, Benchmark, Synthetic, make_benchmark
from tests.mtl_backends.benchmarks.helpers import train_briefly

SMALL: dict[str, Any] = {
    "n_train": 300,
    "n_val": 60,
    "n_test": 60,
    "input_dim": 20,
    "output_dim": 5,
    "hidden": (16,),
}


def test_default_data_is_pinned() -> None:
    bench = Synthetic()
    assert bench.n_tasks == 3
    assert bench.config()["scales"] == pytest.approx([1.0, 10.0, 100.0])
    train = bench.split("train")
    assert train.inputs.shape == (4000, 250)
    assert train.targets.shape == (4000, 3, 100)
    assert len(bench.split("val")) == len(bench.split("test")) == 1000
    # Regenerating with the same seed gives the same data.
    again = Synthetic()
    assert torch.equal(again.split("test").targets, bench.split("test").targets)


def test_builds_trains_and_evaluates() -> None:
    bench = make_benchmark("synthetic", n_tasks=4, **SMALL)
    _, result = train_briefly(bench)
    assert all(not m.higher_is_better for m in bench.metric_specs)
    assert set(result.metrics) == {"t1_mse", "t2_mse", "t3_mse", "t4_mse"}


@pytest.mark.parametrize("n_tasks", [2, 10])
def test_task_count_range(n_tasks: int) -> None:
    bench = Synthetic(n_tasks=n_tasks, **SMALL)
    assert bench.split("train").targets.shape == (300, n_tasks, 5)
    train_briefly(bench, steps=2, jacobian=True)


def test_relatedness_extremes() -> None:
    same = Synthetic(n_tasks=2, scales=[1.0, 1.0], relatedness=1.0, **SMALL)
    y = same.split("train").targets
    torch.testing.assert_close(y[:, 0], y[:, 1])
    apart = Synthetic(n_tasks=2, scales=[1.0, 1.0], relatedness=0.0, **SMALL)
    y = apart.split("train").targets
    corr = np.corrcoef(y[:, 0].flatten().numpy(), y[:, 1].flatten().numpy())[0, 1]
    assert abs(corr) < 0.2
    assert Synthetic(**SMALL).relatedness == pytest.approx(100 / 112.25)


def test_noise_sets_a_floor() -> None:
    clean = Synthetic(n_tasks=2, scales=[1.0, 1.0], **SMALL)
    noisy = Synthetic(n_tasks=2, scales=[1.0, 1.0], noise=[0.0, 0.5], **SMALL)
    # The noise is drawn inline (after the clean targets of a split), so compare the first split.
    diff = noisy.split("train").targets - clean.split("train").targets
    assert float(diff[:, 0].abs().max()) == 0.0
    assert float(diff[:, 1].std()) == pytest.approx(0.5, rel=0.1)


def test_fractions_mask_training_rows_only() -> None:
    bench = Synthetic(n_tasks=3, fractions=[1.0, 0.5, 0.1], **SMALL)
    mask = bench.label_mask("train")
    assert mask.sum(0).tolist() == [300, 150, 30]
    assert bool((bench.label_mask("test") == 1).all())
    assert bench.split("train").targets.shape == (300, 3, 6)
    # The data itself equals the unmasked instance's.
    plain = Synthetic(n_tasks=3, **SMALL)
    torch.testing.assert_close(bench.split("train").targets[..., :-1], plain.split("train").targets)
    train_briefly(bench, steps=3, batch_size=16)


def test_masked_loss_uses_labelled_rows_and_never_empties() -> None:
    bench = Synthetic(n_tasks=2, fractions=[1.0, 0.1], **SMALL)
    train = bench.split("train")
    outputs = [torch.zeros(300, 5), torch.zeros(300, 5)]
    losses = bench.losses(outputs, train.targets)
    labelled = train.targets[:, 1, -1] == 1
    expected = (train.targets[labelled, 1, :-1] ** 2).mean()
    torch.testing.assert_close(losses[1], expected)
    # A batch without any labelled row for task 2 still gives a finite, positive loss.
    rows = torch.nonzero(~labelled).flatten()[:8]
    batch_losses = bench.losses([o[rows] for o in outputs], train.targets[rows])
    assert bool(torch.isfinite(batch_losses).all()) and float(batch_losses[1]) > 0


def test_variation_sampler_is_reproducible_and_covers_ranges() -> None:
    a = Synthetic.sample_variation(np.random.default_rng(7), n_tasks=5)
    b = Synthetic.sample_variation(np.random.default_rng(7), n_tasks=5)
    assert a == b
    assert a != Synthetic.sample_variation(np.random.default_rng(8), n_tasks=5)
    rng = np.random.default_rng(0)
    draws = [Synthetic.sample_variation(rng, n_tasks=4) for _ in range(300)]
    ranges = Synthetic.VARIATION_RANGES
    scales = np.array([d["scales"] for d in draws])
    assert scales.min() >= ranges["scales"][0] and scales.max() <= ranges["scales"][1]
    assert scales.min() < 1.5 and scales.max() > 70  # log-uniform reaches both ends
    rel_noise = np.array([d["noise"] for d in draws]) / scales
    assert rel_noise.min() == 0.0 and 0.18 < rel_noise.max() <= ranges["noise"][1]
    fractions = np.array([d["fractions"] for d in draws])
    assert (fractions == 1.0).any() and 0.1 <= fractions.min() < 0.15
    rel = np.array([d["relatedness"] for d in draws])
    assert ranges["relatedness"][0] <= rel.min() < 0.25 and 0.95 < rel.max() <= 1.0
    assert len({d["seed"] for d in draws}) == 300
    assert all(d["n_tasks"] == 4 for d in draws)


@pytest.mark.parametrize("family", ["default", "wide", "wide2"])
def test_variation_scales_are_libm_exp_of_the_draws(family: str) -> None:
    """Scales are ``math.exp`` of the log-uniform draws, the same on every CPU.

    numpy's vectorised ``exp`` dispatches by instruction set and its AVX-512 path rounds some
    values 1 ulp apart; the drawn scales enter cell keys, so they must not depend on the CPU.
    """
    ranges = Synthetic.VARIATION_RANGES if family == "default" else Synthetic.WIDE_RANGES
    lo, hi = ranges["scales"]
    for seed in range(50):
        drawn = Synthetic.sample_variation(np.random.default_rng(seed), family, n_tasks=8)
        draws = np.random.default_rng(seed).uniform(math.log(lo), math.log(hi), 8)
        assert drawn["scales"] == [math.exp(u) for u in draws]  # bit for bit
    # Pinned: the held-out instance 3 at T = 2 (configs/experiments/generalist.yaml), whose first
    # scale was 1.806955683627567 on an AVX-512 machine with np.exp.
    rng = np.random.default_rng(np.random.SeedSequence(3))
    held_out = Synthetic.sample_variation(rng, "wide", n_tasks=2)["scales"]
    assert held_out == [1.8069556836275673, 5.133712219686926]


def test_variation_builds_with_fixed_arguments() -> None:
    kwargs = Synthetic.sample_variation(np.random.default_rng(3), n_tasks=6, **SMALL)
    bench = make_benchmark("synthetic", **kwargs)
    assert bench.n_tasks == 6
    assert bench.config()["fractions"] == pytest.approx(kwargs["fractions"])
    train_briefly(bench, steps=2, batch_size=50)


def test_base_class_has_no_variations() -> None:
    with pytest.raises(NotImplementedError, match="no sample_variation"):
        Benchmark.sample_variation(np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_tasks": 2, "fractions": [0.5]}, "fractions has 1 entries"),
        ({"n_tasks": 2, "fractions": [0.0, 1.0]}, r"\(0, 1\]"),
        ({"relatedness": 1.5}, r"\[0, 1\]"),
        ({"n_tasks": 0}, "n_tasks"),
        ({"n_tasks": 2, "kinds": ["regression"]}, "kinds has 1 entries but n_tasks is 2"),
        (
            {"n_tasks": 2, "kinds": ["regression", "ranking"]},
            r"unknown task kind\(s\) \['ranking'\]; valid choices: regression, classification",
        ),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Synthetic(**kwargs)


def test_registry_lists_synthetic() -> None:
    assert BENCHMARKS["synthetic"] is Synthetic


# -- the default variation family is the one of before ``family`` existed ----------------------
# Pinned from ``sample_variation`` at a3991df (before task kinds and the ``wide`` family): the
# ``default`` family must keep drawing exactly these arguments, so existing instance sets (and the
# policies trained on them) see the same problems.
PINNED_DEFAULT_2026: dict[str, Any] = {
    "n_tasks": 3,
    "scales": [2.279657629460381, 19.046989019717454, 8.600759469783801],
    "noise": [0.41268361060803216, 0.6756088594530902, 0.0],
    "fractions": [0.6722837237301862, 1.0, 1.0],
    "relatedness": 0.8607162067004561,
    "seed": 1408935049,
}
PINNED_DEFAULT_11: dict[str, Any] = {
    "n_tasks": 5,
    "scales": [
        1.807758472087658,
        9.96679957210149,
        15.958670769718186,
        1.1412427109656642,
        1.9762968078073258,
    ],
    "noise": [0.0, 1.019384370097146, 2.115618490248709, 0.0, 0.0],
    "fractions": [1.0, 1.0, 1.0, 1.0, 1.0],
    "relatedness": 0.6732762431592347,
    "seed": 1547859844,
    "n_train": 60,
}


def test_default_variation_draws_are_unchanged() -> None:
    for family in ({}, {"family": "default"}):
        rng = np.random.default_rng(np.random.SeedSequence(2026))
        assert Synthetic.sample_variation(rng, **family) == PINNED_DEFAULT_2026
        rng = np.random.default_rng(11)
        assert Synthetic.sample_variation(rng, **family, n_tasks=5, n_train=60) == PINNED_DEFAULT_11
    # ... and so is the data of such an instance (sums pinned at a3991df, masked layout).
    tiny = {"n_train": 60, "n_val": 20, "n_test": 20, "input_dim": 6, "output_dim": 2}
    bench = Synthetic(**{**PINNED_DEFAULT_2026, **tiny, "hidden": [4]})
    assert "kinds" not in bench.config()
    pinned = {
        "train": (-104.60968133807182, 50592.924687847524, 0.14494618074968457),
        "val": (134.70575508475304, 16866.2133554627, -6.000086056701548),
        "test": (168.3173768222332, 17195.287641051615, -3.8504109047353268),
    }
    for split, (total, squares, inputs) in pinned.items():
        data = bench.split(split)
        targets = data.targets.double()
        assert targets.shape == (len(data), 3, 3)  # values, then the label mask: no kind flag
        assert float(targets.sum()) == pytest.approx(total, rel=1e-6)
        assert float((targets**2).sum()) == pytest.approx(squares, rel=1e-6)
        assert float(data.inputs.double().sum()) == pytest.approx(inputs, rel=1e-5, abs=1e-5)


# -- the wide family ----------------------------------------------------------------------------
def test_wide_variation_is_reproducible_and_covers_its_ranges() -> None:
    a = Synthetic.sample_variation(np.random.default_rng(7), family="wide", n_tasks=5)
    assert a == Synthetic.sample_variation(np.random.default_rng(7), family="wide", n_tasks=5)
    assert a != Synthetic.sample_variation(np.random.default_rng(8), family="wide", n_tasks=5)
    assert a != Synthetic.sample_variation(np.random.default_rng(7), n_tasks=5)
    rng = np.random.default_rng(0)
    draws = [Synthetic.sample_variation(rng, family="wide", n_tasks=4) for _ in range(400)]
    ranges = Synthetic.WIDE_RANGES
    assert ranges["scales"] == (1.0, 1000.0) and ranges["noise"] == (0.0, 0.3)
    assert ranges["relatedness"] == (0.0, 1.0) and ranges["classification"] == (0.3, 0.3)
    scales = np.array([d["scales"] for d in draws])
    assert scales.min() >= 1.0 and scales.max() <= 1000.0
    assert scales.min() < 1.5 and scales.max() > 700  # log-uniform over three decades
    assert (scales > 100).mean() == pytest.approx(1 / 3, abs=0.05)  # one decade in three
    rel_noise = np.array([d["noise"] for d in draws]) / scales
    assert rel_noise.min() == 0.0 and 0.28 < rel_noise.max() <= 0.3
    assert (rel_noise == 0.0).mean() == pytest.approx(0.5, abs=0.05)
    fractions = np.array([d["fractions"] for d in draws])
    assert (fractions == 1.0).any() and 0.1 <= fractions.min() < 0.15
    rel = np.array([d["relatedness"] for d in draws])
    assert 0.0 <= rel.min() < 0.05 and 0.95 < rel.max() <= 1.0
    kinds = np.array([d["kinds"] for d in draws])
    assert kinds.shape == (400, 4) and set(kinds.flatten()) == set(Synthetic.KINDS)
    # each task a classification with probability 0.3 (1600 tasks: std 0.011)
    assert (kinds == "classification").mean() == pytest.approx(0.3, abs=0.04)
    assert len({d["seed"] for d in draws}) == 400
    assert all(d["n_tasks"] == 4 for d in draws)


def test_wide_variation_keeps_fixed_arguments_and_builds() -> None:
    fixed = {"kinds": ["classification", "regression", "classification"], **SMALL}
    kwargs = Synthetic.sample_variation(np.random.default_rng(5), family="wide", **fixed)
    assert kwargs["kinds"] == fixed["kinds"] and kwargs["n_train"] == 300
    bench = make_benchmark("synthetic", **kwargs)
    assert bench.config()["kinds"] == fixed["kinds"]
    assert [m.name for m in bench.metric_specs] == ["t1_acc", "t2_mse", "t3_acc"]
    assert [m.higher_is_better for m in bench.metric_specs] == [True, False, True]
    _, result = train_briefly(bench, steps=3, batch_size=50)
    for name in ("t1_acc", "t3_acc"):
        assert 0.0 <= result.metrics[name] <= 1.0


def test_unknown_variation_family_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"unknown variation family 'Wide'; valid choices: default, wide, wide2$"
    ):
        Synthetic.sample_variation(np.random.default_rng(0), family="Wide")


def test_wide2_is_wide_plus_a_number_of_classes() -> None:
    """``wide2`` draws ``wide``'s arguments first (equal for the same generator state), then the
    classes: uniform over ``WIDE2_CLASSES``, capped at ``output_dim``."""
    assert Synthetic.WIDE2_CLASSES == (2, 4, 16)
    for seed in range(20):
        wide = Synthetic.sample_variation(np.random.default_rng(seed), family="wide", n_tasks=4)
        wide2 = Synthetic.sample_variation(np.random.default_rng(seed), family="wide2", n_tasks=4)
        assert {k: v for k, v in wide2.items() if k != "classes"} == wide
    rng = np.random.default_rng(0)
    draws = [Synthetic.sample_variation(rng, family="wide2", n_tasks=4) for _ in range(300)]
    classes = np.array([d["classes"] for d in draws]).flatten()
    counts = {c: int((classes == c).sum()) for c in (2, 4, 16)}
    assert set(classes.tolist()) == {2, 4, 16}, counts
    assert all(abs(n / 1200 - 1 / 3) < 0.05 for n in counts.values()), counts
    capped = Synthetic.sample_variation(np.random.default_rng(1), family="wide2", output_dim=5)
    assert max(capped["classes"]) <= 5
    kwargs = Synthetic.sample_variation(
        np.random.default_rng(3), family="wide2", n_tasks=3, **SMALL
    )
    bench = make_benchmark("synthetic", **kwargs)
    assert bench.config()["classes"] == kwargs["classes"]


# -- classification tasks -----------------------------------------------------------------------
def test_classes_are_the_argmax_of_the_noisy_regression_targets() -> None:
    """Kinds draw nothing: a classification task's one-hot class is the argmax of the targets
    the same seed gives the regression task (noise included); the typed layout adds the mask
    (all ones) and the kind flag."""
    common: dict[str, Any] = {"n_tasks": 3, "noise": [0.0, 0.5, 0.2], "scales": [1.0, 1.0, 3.0]}
    plain = Synthetic(**common, **SMALL)
    typed = Synthetic(**common, kinds=["regression", "classification", "classification"], **SMALL)
    o = SMALL["output_dim"]
    for split in ("train", "val", "test"):
        y, t = plain.split(split).targets, typed.split(split).targets
        assert t.shape == (len(y), 3, o + 2)
        assert torch.equal(typed.split(split).inputs, plain.split(split).inputs)
        assert torch.equal(t[:, 0, :o], y[:, 0])
        for task in (1, 2):
            one_hot = torch.nn.functional.one_hot(y[:, task].argmax(dim=1), o).float()
            assert torch.equal(t[:, task, :o], one_hot)
        assert bool((t[:, :, o] == 1.0).all())  # label mask: every row labelled
        assert t[:, :, o + 1].tolist() == [[0.0, 1.0, 1.0]] * len(y)  # kind flags
    assert bool((typed.label_mask("train") == 1.0).all())
    assert typed.kinds == ("regression", "classification", "classification")
    assert plain.kinds == ("regression",) * 3


def _typed_bench(kinds: list[str], **kwargs: Any) -> Synthetic:
    tiny = {"n_train": 4, "n_val": 2, "n_test": 2, "input_dim": 3, "output_dim": 3, "hidden": [2]}
    return Synthetic(n_tasks=len(kinds), kinds=kinds, **{**tiny, **kwargs})


def _targets(rows: list[list[list[float]]]) -> torch.Tensor:
    """Typed targets ``[N, T, o + 2]`` from ``[values..., mask, kind]`` per row and task."""
    return torch.tensor(rows, dtype=torch.float32)


def test_classification_loss_is_the_hand_computed_cross_entropy() -> None:
    bench = _typed_bench(["classification", "regression"])
    ln2, ln3 = math.log(2.0), math.log(3.0)
    # Task 1: logits [0, ln 2, 0] -> softmax [1/4, 1/2, 1/4], class 1: CE = ln 2;
    #         logits [0, 0, 0] -> 1/3 each, class 2: CE = ln 3.
    # Task 2 (MSE over the 3 outputs): row 1 errors [1, 0, -1] -> 2/3; row 2 errors [2, 2, 2] -> 4.
    outputs = [
        torch.tensor([[0.0, ln2, 0.0], [0.0, 0.0, 0.0]]),
        torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]),
    ]
    targets = _targets(
        [
            [[0, 1, 0, 1, 1], [0, 2, 4, 1, 0]],
            [[0, 0, 1, 1, 1], [0, 0, 0, 1, 0]],
        ]
    )
    losses = bench.losses(outputs, targets)
    torch.testing.assert_close(losses, torch.tensor([(ln2 + ln3) / 2, (2 / 3 + 4) / 2]))
    # The label mask selects rows: only the second row labelled for task 1, the first for task 2.
    masked = targets.clone()
    masked[0, 0, 3] = 0.0
    masked[1, 1, 3] = 0.0
    torch.testing.assert_close(bench.losses(outputs, masked), torch.tensor([ln3, 2 / 3]))
    # No labelled row: the first row stands in (finite, never 0 / 0).
    masked[:, 0, 3] = 0.0
    torch.testing.assert_close(bench.losses(outputs, masked)[0], torch.tensor(ln2))


@settings(max_examples=40, deadline=None)
@given(
    logits=st.lists(
        st.lists(st.floats(-20.0, 20.0), min_size=3, max_size=3), min_size=1, max_size=6
    ),
    seed=st.integers(0, 2**16),
)
def test_classification_loss_equals_torch_cross_entropy(
    logits: list[list[float]], seed: int
) -> None:
    bench = _typed_bench(["classification"])
    out = torch.tensor(logits, dtype=torch.float32)
    classes = torch.randint(0, 3, (len(logits),), generator=torch.Generator().manual_seed(seed))
    targets = torch.cat(
        [torch.nn.functional.one_hot(classes, 3).float(), torch.ones(len(logits), 2)], dim=1
    )
    loss = bench.losses([out], targets[:, None, :])
    torch.testing.assert_close(loss[0], torch.nn.functional.cross_entropy(out, classes))


def test_accuracy_metric_is_hand_computed() -> None:
    bench = _typed_bench(["regression", "classification"])
    # Classes [1, 2, 0, 2]; predictions (argmax) [1, 2, 1, 0]: 2 hits of 4.
    classes = [1, 2, 0, 2]
    one_hot = torch.nn.functional.one_hot(torch.tensor(classes), 3).float()
    logits = torch.tensor([[0.0, 3.0, 1.0], [-1.0, 0.0, 0.5], [0.2, 0.3, 0.1], [2.0, 1.0, 1.5]])
    reg_y = torch.zeros(4, 3)
    reg_out = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    targets = torch.stack(
        [
            torch.cat([reg_y, torch.ones(4, 1), torch.zeros(4, 1)], dim=1),
            torch.cat([one_hot, torch.ones(4, 2)], dim=1),
        ],
        dim=1,
    )
    metrics = bench.metrics([reg_out, logits], targets)
    assert set(metrics) == {"t1_mse", "t2_acc"}
    assert metrics["t2_acc"] == 0.5
    assert metrics["t1_mse"] == pytest.approx((1.0 + 0.0 + 3.0 + 0.0) / 4)  # (3/3 + 9/3) / 4
    logits[2] = torch.tensor([5.0, 0.0, 0.0])  # the third row becomes a hit
    assert bench.metrics([reg_out, logits], targets)["t2_acc"] == 0.75


def test_mixed_kind_instances_share_one_layout_and_one_losses_function() -> None:
    """The kind flag is data: any typed instance's ``losses`` gives every other typed instance's
    losses on that instance's targets, so runs of different kinds can be stacked."""
    a = Synthetic(n_tasks=3, kinds=["regression", "classification", "regression"], **SMALL)
    b = Synthetic(
        n_tasks=3,
        kinds=["classification", "classification", "regression"],
        fractions=[0.5, 1.0, 0.2],
        seed=4,
        **SMALL,
    )
    ya, yb = a.split("train").targets, b.split("train").targets
    assert ya.shape == yb.shape == (300, 3, SMALL["output_dim"] + 2)
    assert b.label_mask("train").sum(0).tolist() == [150, 300, 60]
    torch.manual_seed(0)
    outputs = [torch.randn(300, SMALL["output_dim"]) for _ in range(3)]
    assert torch.equal(a.losses(outputs, yb), b.losses(outputs, yb))
    assert torch.equal(b.losses(outputs, ya), a.losses(outputs, ya))
    # A typed instance with regression tasks only has the regression data and losses.
    plain = Synthetic(n_tasks=3, **SMALL)
    typed = Synthetic(n_tasks=3, kinds=["regression"] * 3, **SMALL)
    o = SMALL["output_dim"]
    assert torch.equal(typed.split("train").targets[..., :o], plain.split("train").targets)
    torch.testing.assert_close(
        typed.losses(outputs, typed.split("train").targets),
        plain.losses(outputs, plain.split("train").targets),
    )


def test_classes_restrict_the_labels_and_keep_the_generator() -> None:
    """``classes`` takes the argmax over the first ``c`` outputs of the same generator draw: the
    inputs and the regression targets are unchanged, each class lies below ``c``, and a
    classification's class is the one of the full argmax whenever that lies below ``c``."""
    kinds = ["classification", "regression", "classification"]
    full = Synthetic(n_tasks=3, kinds=kinds, **SMALL)
    few = Synthetic(n_tasks=3, kinds=kinds, classes=[2, 7, 3], **SMALL)
    o = SMALL["output_dim"]
    a, b = full.split("train"), few.split("train")
    assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.targets[:, 1], b.targets[:, 1])
    for t, c in ((0, 2), (2, 3)):
        cls_full = a.targets[:, t, :o].argmax(1)
        cls_few = b.targets[:, t, :o].argmax(1)
        assert int(cls_few.max()) < c and set(cls_few.tolist()) == set(range(c))
        below = cls_full < c
        assert torch.equal(cls_few[below], cls_full[below])
        assert torch.equal(b.targets[:, t, :o].sum(1), torch.ones(len(b)))  # one-hot
    assert few.config()["classes"] == [2, 7, 3] and "classes" not in full.config()
    assert Synthetic(**few.config()).split("val").targets.equal(few.split("val").targets)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": [2, 2, 2]}, "classes needs kinds: without kinds every task is a regression"),
        (
            {"kinds": ["classification"] * 3, "classes": [2, 2]},
            "classes has 2 entries but n_tasks is 3",
        ),
        (
            {"kinds": ["classification", "regression", "classification"], "classes": [1, 0, 6]},
            "classes must lie in [2, output_dim=5] for classification tasks, got [1, 6]",
        ),
    ],
)
def test_bad_classes_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        Synthetic(n_tasks=3, **kwargs, **SMALL)
    assert str(err.value) == message


def test_fewer_classes_make_an_easier_task() -> None:
    """Two classes of the same generator are learned to a higher accuracy than five."""
    accs = []
    for c in (5, 2):
        bench = Synthetic(n_tasks=1, kinds=["classification"], classes=[c], **SMALL)
        _, result = train_briefly(bench, steps=200)
        accs.append(result.metrics["t1_acc"])
    assert accs[1] > accs[0] + 0.1, accs
