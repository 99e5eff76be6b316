"""Instance sets: forms, reproducible order, round-robin coverage, options, T checks, state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from igb_env import make_env
from igb_env.config import held_out_config, load_env_config
from igb_env.instances import BenchmarkCache, InstanceSampler, InstanceSet, reset_options
from igb_env.vector import BatchedIGBEnv
from mtl_backends.benchmarks import Synthetic, instance_kwargs, make_benchmark
from mtl_backends.registry import ConfigError

SMALL: dict[str, Any] = {
    "preset": "tiny",
    "benchmark": {"name": "synthetic", "n_train": 200, "n_val": 50, "n_test": 50, "seed": 3},
    "train": {"steps": 30, "base_window": [5, 10], "batch_size": 20},
    "steps_per_action": 10,
    "val_batch_size": 50,
}


def instances(env, n: int, seed: int | None = None) -> list[int]:
    out = []
    for i in range(n):
        _, info = env.reset(seed=seed if i == 0 else None)
        out.append(info["instance"])
    return out


def resolve(value: Any) -> Sequence[int]:
    parsed = InstanceSet.parse(value)
    assert parsed is not None
    return parsed.resolve()


def test_set_forms_round_trip() -> None:
    assert resolve([4, 2]) == (4, 2)
    assert resolve({"range": [5, 9]}) == range(5, 9)
    sample = InstanceSet.parse({"range": [0, 1_000_000], "count": 6, "seed": 7})
    assert sample is not None
    seeds = sample.resolve()
    assert len(set(seeds)) == 6 and all(0 <= s < 1_000_000 for s in seeds)
    assert InstanceSet.parse(sample.to_config()) == sample
    assert seeds == resolve({"range": [0, 1_000_000], "count": 6, "seed": 7})
    assert seeds != resolve({"range": [0, 1_000_000], "count": 6, "seed": 8})
    cfg = load_env_config({**SMALL, "instance_set": [1, 2, 3], "test_set": {"range": [10, 13]}})
    assert load_env_config(cfg.to_dict()) == cfg
    assert list(cfg.train_instances) == [1, 2, 3] and list(cfg.test_instances) == [10, 11, 12]
    for bad in (
        [],
        [1.5],
        {"range": [3, 3]},
        {"range": [0, 5], "count": 9},
        "1,2",
        {"seeds": [1], "range": [0, 2]},
    ):
        with pytest.raises(ConfigError):
            load_env_config({**SMALL, "instance_set": bad})
    with pytest.raises(ConfigError, match="instance_order"):
        load_env_config({**SMALL, "instance_order": "shuffled"})


def test_default_draws_are_unchanged() -> None:
    env = make_env(SMALL)
    low, high = env.config.instances
    rng = np.random.default_rng(11)
    assert instances(env, 3, seed=11) == [int(rng.integers(low, high)) for _ in range(3)]


@pytest.mark.parametrize("order", ["random", "round_robin"])
def test_same_seed_same_sequence(order: str) -> None:
    cfg = {**SMALL, "instance_set": {"range": [100, 120]}, "instance_order": order}
    first = instances(make_env(cfg), 6, seed=5)
    assert first == instances(make_env(cfg), 6, seed=5)
    assert first != instances(make_env(cfg), 6, seed=6)
    assert all(100 <= s < 120 for s in first)


def test_round_robin_covers_the_set_in_order() -> None:
    seeds = [7, 3, 11, 5]
    env = make_env({**SMALL, "instance_set": seeds, "instance_order": "round_robin"})
    assert instances(env, 8) == seeds + seeds  # unseeded: from the start of the set
    walk = instances(env, 4, seed=2)  # seeded: from an offset drawn from np_random
    assert sorted(walk) == sorted(seeds)
    start = seeds.index(walk[0])
    assert walk == (seeds[start:] + seeds[:start])


def test_options_instance_is_honoured_and_keeps_the_cursor() -> None:
    env = make_env({**SMALL, "instance_set": [1, 2, 3], "instance_order": "round_robin"})
    assert env.reset()[1]["instance"] == 1
    assert env.reset(options={"instance": 999})[1]["instance"] == 999  # any seed, even held out
    assert env.reset()[1]["instance"] == 2


def test_instance_state_restores_the_sequence() -> None:
    for order in ("random", "round_robin"):
        env = make_env({**SMALL, "instance_set": {"range": [0, 50]}, "instance_order": order})
        instances(env, 3, seed=1)
        state = env.get_instance_state()
        after = instances(env, 4)
        other = make_env({**SMALL, "instance_set": {"range": [0, 50]}, "instance_order": order})
        other.set_instance_state(state)
        assert instances(other, 4) == after
    small = make_env({**SMALL, "instance_set": [1, 2], "instance_order": "random"})
    with pytest.raises(ValueError, match="does not fit"):
        small.set_instance_state(state)


def test_mismatched_task_counts_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Synthetic.sample_variation.__func__  # type: ignore[attr-defined]

    def varying_t(cls: type[Synthetic], rng: np.random.Generator, **fixed: Any) -> dict[str, Any]:
        return original(cls, rng, **{**fixed, "n_tasks": 2 + int(rng.integers(2))})

    monkeypatch.setattr(Synthetic, "sample_variation", classmethod(varying_t))
    cfg = {**SMALL, "benchmark": {"name": "synthetic", "n_train": 200, "n_val": 50, "n_test": 50}}
    with pytest.raises(ConfigError, match="share T"):
        make_env({**cfg, "variation": True, "instance_set": list(range(20))})


def test_held_out_set_is_separate() -> None:
    with pytest.raises(ConfigError, match="overlaps"):
        load_env_config({**SMALL, "test_set": [5, 6]})  # inside the default training range
    cfg = {**SMALL, "instances": [100, 1000], "test_set": [5, 6, 7]}
    held = held_out_config(cfg)
    assert held["instance_order"] == "round_robin" and held["test_set"] is None
    assert instances(make_env(held), 4) == [5, 6, 7, 5]
    with pytest.raises(ConfigError, match="no test_set"):
        held_out_config(SMALL)


def test_sampler_rejects_bad_orders() -> None:
    with pytest.raises(ConfigError):
        InstanceSampler([1], "shuffle")


def test_variation_may_name_a_family() -> None:
    cfg = load_env_config({"preset": "smoke", "variation": "wide", "instance_set": [4, 5]})
    assert cfg.variation == "wide"
    assert load_env_config(cfg.to_dict()) == cfg
    cache = BenchmarkCache(cfg.benchmark, variation=cfg.variation)
    for instance in (4, 5):
        want = instance_kwargs(Synthetic, cfg.benchmark, instance, variation="wide")
        assert cache.kwargs_for(instance) == want and "kinds" in want
    env = make_env(cfg.to_dict())
    _, info = env.reset(options={"instance": 5})
    assert info["instance"] == 5
    bench = env._benchmarks.get(5)
    assert bench.config() == make_benchmark("synthetic", **cache.kwargs_for(5)).config()
    assert bench.config()["kinds"] == cache.kwargs_for(5)["kinds"]
    # true is the default family, false none
    assert BenchmarkCache(cfg.benchmark, variation=True).kwargs_for(4) == instance_kwargs(
        Synthetic, cfg.benchmark, 4, variation="default"
    )
    assert "scales" not in BenchmarkCache(cfg.benchmark, variation=False).kwargs_for(4)


def test_an_unknown_variation_family_is_refused_when_the_env_is_built() -> None:
    message = "unknown variation family 'broad'; valid choices: default, wide, wide2"
    with pytest.raises(ValueError, match=message):
        make_env({"preset": "smoke", "variation": "broad"})
    with pytest.raises(ValueError, match=message):
        BatchedIGBEnv(2, {"preset": "smoke", "variation": "broad"})
    with pytest.raises(ValueError, match=message):
        BenchmarkCache(load_env_config({"preset": "smoke"}).benchmark, variation="broad").get(0)
    # neither true/false nor a family name
    with pytest.raises(ConfigError, match="variation"):
        load_env_config({"preset": "smoke", "variation": 1})


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"instance": 2.7}, r"options\['instance'\]"),
        ({"instance": -1}, r"options\['instance'\]"),
        ({"instance": True}, r"options\['instance'\]"),
        ({"instance": "3"}, r"options\['instance'\]"),
        ({"instances": [1, 2.5]}, r"options\['instances'\]\[1\]"),
        ({"instances": "12"}, r"options\['instances'\] must be a list"),
    ],
)
def test_reset_seeds_must_be_non_negative_integers(options: dict[str, Any], where: str) -> None:
    """A float seed was truncated to another instance (2.7 ran instance 2): now refused."""
    with pytest.raises(ValueError, match=where):
        reset_options(options, ("instance", "instances"))


def test_reset_seeds_accept_numpy_integers() -> None:
    out = reset_options(
        {"instance": np.int64(7), "instances": [np.int32(1), 2]}, ("instance", "instances")
    )
    assert out == {"instance": 7, "instances": [1, 2]}
    assert type(out["instance"]) is int


def test_the_env_refuses_a_float_instance_before_resetting() -> None:
    env = make_env({"preset": "smoke"})
    with pytest.raises(ValueError, match=r"non-negative integer instance seed, got 2\.7"):
        env.reset(options={"instance": 2.7})
