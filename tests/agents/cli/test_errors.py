"""The ``igb`` error boundary: every expected failure is one line naming the problem (issue 18).

Bad input exits with 2, a failed run with 1; no expected failure prints a traceback, ``--debug``
does. Each case below ended in a traceback, a message without the file or setting, a silent run
or a failure *after* training before issue 18.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from agents.cli import main

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "runs" / "smoke.yaml"


def _config(tmp_path: Path, **changes: Any) -> Path:
    """The smoke run config with ``changes`` merged in (``train`` key by key)."""
    data = yaml.safe_load(SMOKE.read_text())
    data["stl_cache"] = str(tmp_path / "stl")
    for key, value in changes.items():
        if key == "train":
            data["train"] = {**data["train"], **value}
        else:
            data[key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _one_line(err: str, command: str) -> str:
    """The failure message, checked to be a single line without a traceback."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"igb {command}: ")]
    assert len(lines) == 1, err
    return lines[0]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# (name, argv builder, expected exit code, pattern of the message)
Case = tuple[str, Callable[[Path], list[str]], int, str]

CASES: list[Case] = [
    (
        "empty config",
        lambda t: ["train", str(_write(t, "e.yaml", "")), "--no-stl"],
        2,
        r"error: config '.*e\.yaml' is empty",
    ),
    (
        "yaml syntax",
        lambda t: ["train", str(_write(t, "s.yaml", "train: {steps: [1\n")), "--no-stl"],
        2,
        r"error: config '.*s\.yaml' is not valid YAML at line 2",
    ),
    (
        "lr inf",
        lambda t: ["train", str(_config(t, train={"lr": float("inf")})), "--no-stl"],
        2,
        r"train\.lr must be a finite number > 0, got inf",
    ),
    (
        "eps negative",
        lambda t: ["train", str(_config(t, train={"eps": -1.0})), "--no-stl"],
        2,
        r"train\.eps must be a finite number >= 0, got -1\.0",
    ),
    (
        "eval batch size 0",
        lambda t: ["train", str(_config(t, train={"eval_batch_size": 0})), "--no-stl"],
        2,
        r"train\.eval_batch_size must be >= 1, got 0",
    ),
    (
        "negative seed",
        lambda t: ["train", str(_config(t)), "--seed", "-1", "--no-stl"],
        2,
        r"seed must be >= 0 .*got -1",
    ),
    (
        "base window past the budget",
        lambda t: ["train", str(_config(t, train={"base_window": [5, 40]})), "--no-stl"],
        2,
        r"train\.base_window \[5, 40\] leaves no steps after the base window",
    ),
    (
        "steps override inside the base window",
        lambda t: ["train", str(_config(t)), "--steps", "8", "--no-stl"],
        2,
        r"must end before train\.steps \(8\)",
    ),
    (
        "n_tasks of the wrong type",
        lambda t: [
            "train",
            str(_config(t, benchmark={"name": "synthetic", "n_tasks": "three"})),
            "--no-stl",
        ],
        2,
        r"benchmark 'synthetic': argument 'n_tasks' must be an integer, got 'three'",
    ),
    (
        "out is a file",
        lambda t: ["train", str(_config(t)), "--out", str(_write(t, "f", "x")), "--no-stl"],
        2,
        r"error: --out '.*/f' is a file; give a folder path",
    ),
    (
        "stl cache is a file",
        lambda t: ["train", str(_config(t, stl_cache=str(_write(t, "cache", "x"))))],
        2,
        r"error: stl_cache '.*cache' is a file",
    ),
    (
        "damaged policy sidecar",
        lambda t: [
            "train",
            str(_config(t, weighting={"name": "policy", "path": str(_damaged_policy(t))})),
            "--no-stl",
        ],
        2,
        r"error: policy sidecar '.*policy\.json' is not valid JSON",
    ),
    (
        "exploding run",
        lambda t: ["train", str(_config(t, train={"optimizer": "sgd", "lr": 1000.0})), "--no-stl"],
        1,
        r"run failed: training diverged: exploding loss at step \d+: .*lower train\.lr",
    ),
    (
        "compare out is a file",
        lambda t: [
            "compare",
            str(ROOT / "configs" / "experiments" / "smoke.yaml"),
            "--out",
            str(_write(t, "results", "x")),
            "--no-progress",
        ],
        2,
        r"error: --out '.*results' is a file",
    ),
    (
        "export of a folder that is not a run",
        lambda t: ["export", str(t)],
        2,
        r"error: RUN '.*' is not an agent run folder \(no config\.yaml\)",
    ),
    (
        "export out is a file",
        lambda t: ["export", str(_fake_run(t)), "--out", str(_write(t, "p", "x"))],
        2,
        r"error: --out '.*/p' is a file",
    ),
    (
        "misspelt sb3 hyperparameter",
        lambda t: ["train-agent", str(_agent(t, n_step=20)), "--out", str(t / "agent")],
        2,
        r"hyperparameters: PPO does not take 'n_step' \(did you mean 'n_step' -> 'n_steps'\?\)",
    ),
    (
        "train-agent out is a file",
        lambda t: ["train-agent", str(_agent(t)), "--out", str(_write(t, "a", "x"))],
        2,
        r"error: --out '.*/a' is a file",
    ),
    (
        "tune-static out is a folder",
        lambda t: ["tune-static", str(_config(t)), "--out", str(t)],
        2,
        r"error: --out '.*' is a folder; give a file path",
    ),
    (
        "tune-static trials 0, in the flag's words",
        lambda t: ["tune-static", str(_config(t)), "--search", "tpe", "--trials", "0"],
        2,
        r"error: --trials \(the trial budget\) must be >= 1, got 0",
    ),
    (
        "tune-static search seed, in the flag's words",
        lambda t: ["tune-static", str(_config(t)), "--search", "tpe", "--search-seed", "-1"],
        2,
        r"error: --search-seed must be",
    ),
    (
        "resume of a folder without checkpoints",
        lambda t: ["train-agent", "--resume", str(t)],
        2,
        r"error: '.*' has no checkpoint\.json: nothing to resume",
    ),
]


def _damaged_policy(tmp_path: Path) -> Path:
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "policy.json").write_text('{"format": "igb-policy",')
    (folder / "policy.pt").write_bytes(b"")
    return folder


def _fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("algorithm: ppo\n")
    return run


def _agent(tmp_path: Path, **hyperparameters: Any) -> Path:
    data = {
        "env": {"preset": "tiny"},
        "hyperparameters": {"n_steps": 20, "batch_size": 20, **hyperparameters},
        "total_timesteps": 40,
        "vec_env": "dummy",
    }
    return _write(tmp_path, "agent.yaml", yaml.safe_dump(data))


@pytest.mark.parametrize(("name", "argv", "code", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_expected_failures_are_one_line_with_the_right_exit_code(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    argv: Callable[[Path], list[str]],
    code: int,
    pattern: str,
) -> None:
    args = argv(tmp_path)
    exit_code, err = _run(args, capsys)
    line = _one_line(err, args[0])
    assert exit_code == code, line
    assert re.search(pattern, line), line
    # Nothing was written where a run would have gone.
    assert not (tmp_path / "agent").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_an_unavailable_device_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", str(_config(tmp_path, train={"device": "cuda"})), "--no-stl"]
    exit_code, err = _run(args, capsys)
    line = _one_line(err, "train")
    assert exit_code == 2
    assert "train.device 'cuda' is not available" in line and "use train.device: cpu" in line


def test_a_python_tag_in_yaml_runs_no_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    hostile = _write(
        tmp_path, "h.yaml", f"seed: !!python/object/apply:os.system ['touch {marker}']"
    )
    exit_code, err = _run(["train", str(hostile), "--no-stl"], capsys)
    assert exit_code == 2 and not marker.exists()
    assert "could not determine a constructor" in _one_line(err, "train")


def test_debug_prints_the_traceback_with_the_same_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", str(_config(tmp_path, train={"lr": -1.0})), "--no-stl"]
    for argv in (["--debug", *args], [*args, "--debug"]):
        exit_code, err = _run(argv, capsys)
        assert exit_code == 2
        assert "Traceback (most recent call last)" in err and "ConfigError" in err
        assert re.match(r"igb train: error: .*run\.yaml: train\.lr", err.rstrip().splitlines()[-1])


def test_an_unexpected_exception_is_one_line_that_asks_for_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import agents.cli.train as command

    def broken(args: Any) -> int:
        raise KeyError("internal state")

    monkeypatch.setattr(command, "main", broken)
    exit_code, err = _run(["train", str(_config(tmp_path))], capsys)
    line = _one_line(err, "train")
    assert exit_code == 1
    assert "internal error: KeyError: 'internal state'" in line and "--debug" in line


def test_an_interrupt_exits_with_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import agents.cli.train as command

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "main", interrupted)
    exit_code, err = _run(["train", str(_config(tmp_path))], capsys)
    assert exit_code == 130 and _one_line(err, "train") == "igb train: interrupted"


def test_a_full_disk_is_a_failed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import agents.cli.train as command

    def full(args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.json"))

    monkeypatch.setattr(command, "main", full)
    exit_code, err = _run(["train", str(_config(tmp_path))], capsys)
    line = _one_line(err, "train")
    assert exit_code == 1
    assert "run failed: No space left on device: '" in line and "free some disk space" in line
