from __future__ import annotations

import json
from pathlib import Path

import pytest

import mtl_backends.stl as stl
from mtl_backends.config import MethodSpec, TrainConfig

BENCH = MethodSpec(
    "synthetic",
    {"n_train": 100, "n_val": 20, "n_test": 20, "input_dim": 8, "output_dim": 3, "hidden": [8]},
)
TRAIN = TrainConfig(steps=6, batch_size=20)


def test_reference_has_every_metric_of_both_splits(tmp_path: Path) -> None:
    ref = stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    assert set(ref) == {"val", "test"}
    assert set(ref["test"]) == {"t1_mse", "t2_mse", "t3_mse"}


def test_cache_hits_and_invalidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = stl.train_stl

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stl, "train_stl", counting)
    first = stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    again = stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    assert first == again and len(calls) == 1  # hit
    stl.stl_reference(BENCH, TRAIN, 1, tmp_path)  # another seed
    stl.stl_reference(BENCH, TrainConfig(steps=7, batch_size=20), 0, tmp_path)  # another budget
    other_bench = MethodSpec("synthetic", {**BENCH.kwargs, "scales": [1.0, 2.0, 3.0]})
    stl.stl_reference(other_bench, TRAIN, 0, tmp_path)  # another benchmark
    assert len(calls) == 4
    # Settings that cannot change single-task training share the entry.
    stl.stl_reference(BENCH, TrainConfig(steps=6, batch_size=20, base_window=(1, 2)), 0, tmp_path)
    assert len(calls) == 4
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 4
    assert json.loads(files[0].read_text())["version"] == stl.STL_FORMAT_VERSION


def test_stl_matches_training_one_task_alone(tmp_path: Path) -> None:
    # The task-1 reference equals an MTL run with one-hot weights on task 1.
    from mtl_backends import MTLTrainer, make_balancer, make_benchmark
    from mtl_backends.weightings import SingleTask

    ref = stl.stl_reference(BENCH, TRAIN, 3, None)
    bench = make_benchmark(BENCH.name, **dict(BENCH.kwargs))
    t = MTLTrainer(bench, SingleTask(1), make_balancer("sum"), TRAIN, seed=3)
    t.fit()
    assert ref["test"]["t2_mse"] == t.evaluate("test").metrics["t2_mse"]


# -- Cache entries verify their content; the cache is checked before training (issue 18) ---------


def _count_training(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = stl.train_stl

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stl, "train_stl", counting)
    return calls


def test_keys_are_the_ones_written_before_divergence_factor_existed() -> None:
    # Computed with the code before the field was added (commit 9149de9): cached references stay.
    train = TrainConfig(steps=30, batch_size=50, base_window=(5, 10))
    key = stl.stl_key(MethodSpec("synthetic", {"n_tasks": 3}), train, 2)
    assert key == "a1a915a3ec9c6694ccc3810b058028b024253a156d92b96f1a9441e7aa11985a"


def test_entries_carry_a_content_hash(tmp_path: Path) -> None:
    stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    (path,) = tmp_path.glob("*.json")
    entry = json.loads(path.read_text())
    assert entry[stl.HASH_FIELD] == stl.content_hash(entry)
    assert stl.read_stl_entry(path) == entry["reference"]


@pytest.mark.parametrize(
    "damage",
    ["edit_metric", "drop_hash", "truncate", "not_an_object", "bad_metrics"],
)
def test_a_damaged_entry_is_retrained_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    calls = _count_training(monkeypatch)
    first = stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    (path,) = tmp_path.glob("*.json")
    entry = json.loads(path.read_text())
    if damage == "edit_metric":  # an edited number: the hash no longer verifies
        entry["reference"]["test"]["t1_mse"] = 1e-9
        path.write_text(json.dumps(entry))
    elif damage == "drop_hash":  # an entry of an older igb-rl, or an edit that removed it
        del entry[stl.HASH_FIELD]
        path.write_text(json.dumps(entry))
    elif damage == "truncate":
        path.write_text(path.read_text()[:50])
    elif damage == "not_an_object":
        path.write_text("[1, 2, 3]")
    else:  # hashed, but not split -> metric -> number
        entry["reference"]["test"]["t1_mse"] = "small"
        entry[stl.HASH_FIELD] = stl.content_hash(entry)
        path.write_text(json.dumps(entry))
    with pytest.warns(UserWarning, match=r"STL cache entry '.*\.json'.*training the STL"):
        again = stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    assert again == first and len(calls) == 2
    assert stl.read_stl_entry(path) == first  # rewritten whole


def test_a_cache_that_is_a_file_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_training(monkeypatch)
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder should be")
    with pytest.raises(NotADirectoryError, match=r"stl_cache '.*cache' is a file"):
        stl.stl_reference(BENCH, TRAIN, 0, cache)
    with pytest.raises(NotADirectoryError, match=r"stl_cache .* cannot be created"):
        stl.stl_reference(BENCH, TRAIN, 0, cache / "sub")
    assert calls == []
