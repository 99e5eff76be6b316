"""``igb train-agent --seeds``: one job per seed, resumed and skipped on a rerun, any backend."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from agents.callbacks import TaskMetricsCallback
from agents.checkpoint import latest_checkpoint, load_state
from agents.cli import main
from agents.config import AgentConfig
from agents.experiments import seed_jobs
from agents.experiments.backends import LocalBackend, RayBackend
from agents.experiments.seed_jobs import (
    ERROR_FILE,
    MANIFEST,
    SeedResult,
    SeedTask,
    check_seeds,
    default_workers,
    prepare_folder,
    read_manifest,
    resume_seeds,
    seed_folder,
    train_seeds,
)
from agents.train import load_model
from mtl_backends.config import to_dict
from mtl_backends.fileio import FileFormatError
from mtl_backends.registry import ConfigError
from tests.agents._configs import tiny_agent

QUIET = ("--no-progress",)


def _config(**changes: object) -> AgentConfig:
    """PPO on the tiny env: 20 decisions (240 MTL steps), 2 rollouts of 10, a checkpoint each."""
    settings: dict[str, object] = {
        "hyperparameters": {"n_steps": 5, "batch_size": 10, "n_epochs": 2},
        "total_timesteps": 20,
        "checkpoint_every": 10,
        "reference_instances": 0,
        "eval_every": None,
    }
    return tiny_agent("ppo", **{**settings, **changes})


def _yaml(config: AgentConfig, path: Path) -> str:
    path.write_text(yaml.safe_dump(to_dict(config)))
    return str(path)


def _parameters(run: Path) -> dict[str, torch.Tensor]:
    return dict(load_model(run).policy.state_dict())


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Seeds 0 and 1 trained one after the other in this process, and the progress lines."""
    lines: list[str] = []
    out = tmp_path_factory.mktemp("seeds") / "local"
    summary = train_seeds(_config(), [0, 1], out, workers=1, progress_bar=False, log=lines.append)
    assert [r.status for r in summary.results] == ["trained", "trained"], summary
    return out, lines


def test_ray_tasks_give_the_local_result_bit_for_bit(
    local_runs: tuple[Path, list[str]], ray_backend: RayBackend, tmp_path: Path
) -> None:
    local, local_lines = local_runs
    lines: list[str] = []
    summary = train_seeds(
        _config(), [0, 1], tmp_path, backend="ray", log=lines.append, runner=ray_backend
    )
    assert [(r.seed, r.status, r.timesteps) for r in summary.results] == [
        (0, "trained", 20),
        (1, "trained", 20),
    ]
    assert {r.torch_threads for r in summary.results} == {1}  # one torch thread per Ray task
    for seed in (0, 1):
        ours, theirs = seed_folder(tmp_path, seed), seed_folder(local, seed)
        assert _same(_parameters(ours), _parameters(theirs)), f"seed {seed} differs from local"
        assert load_state(latest_checkpoint(ours))["timesteps"] == 20
    # The seeds really are different runs, so equality above is not vacuous.
    assert not _same(_parameters(seed_folder(local, 0)), _parameters(seed_folder(local, 1)))
    # One line per seed start and end, each naming the seed's folder.
    for log, out in ((lines, tmp_path), (local_lines, local)):
        for seed in (0, 1):
            mine = [line for line in log if line.startswith(f"seed {seed}: ")]
            folder = str(seed_folder(out, seed).resolve())
            assert mine[0] == f"seed {seed}: started (new run) in {folder}", log
            assert mine[1].startswith(f"seed {seed}: trained (20 timesteps, ") and len(mine) == 2
            assert mine[1].endswith(f" s): {folder}")


class KilledError(Exception):
    """Stands in for a kill or a crash of one seed between two checkpoints."""


def test_a_failed_seed_is_reported_and_a_rerun_resumes_it_and_skips_the_finished(
    local_runs: tuple[Path, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "seeds"
    shutil.copytree(local_runs[0], out)
    finished = {s: seed_folder(out, s) / "model.zip" for s in (0, 1)}
    before = {s: (p.stat().st_mtime_ns, p.read_bytes()) for s, p in finished.items()}
    step = TaskMetricsCallback._on_step

    def dies_after_one_rollout(self: TaskMetricsCallback) -> bool:
        if self.num_timesteps > 10:
            raise KilledError("seed crashed on purpose")
        return step(self)

    # The same command with a new seed 2, which crashes after its first checkpoint.
    monkeypatch.setattr(TaskMetricsCallback, "_on_step", dies_after_one_rollout)
    argv = ["train-agent", _yaml(_config(), tmp_path / "a.yaml"), "--seeds", "0", "1", "2"]
    assert main([*argv, "--out", str(out), "--workers", "1", *QUIET]) == 1
    monkeypatch.undo()
    captured = capsys.readouterr()
    s2 = seed_folder(out, 2).resolve()
    assert f"seed 0: finished before, skipped: {seed_folder(out, 0).resolve()}" in captured.out
    assert "seed 2: FAILED after" in captured.out
    assert f"seed 2 ({s2}): KilledError: seed crashed on purpose" in captured.err
    assert "1 of 3 seeds failed" in captured.err
    assert "KilledError" in (s2 / ERROR_FILE).read_text()
    assert load_state(latest_checkpoint(s2))["timesteps"] == 10
    assert read_manifest(out)[1] == (0, 1, 2)

    # --resume DIR finishes seed 2 from its checkpoint; the finished seeds are not touched.
    assert main(["train-agent", "--resume", str(out), "--workers", "1", *QUIET]) == 0
    printed = capsys.readouterr().out
    assert "seed 2: started (resuming from its checkpoint at 10 timesteps)" in printed
    assert "3 seeds in" in printed and "0 trained, 1 resumed, 2 skipped, 0 failed" in printed
    summary = json.loads((s2 / "training.json").read_text())
    assert summary["timesteps"] == 20 and summary["resumed_from"] == 10
    assert not (s2 / ERROR_FILE).exists()
    assert {s: (p.stat().st_mtime_ns, p.read_bytes()) for s, p in finished.items()} == before

    # Everything finished: the same command again trains nothing.
    lines: list[str] = []
    again = train_seeds(_config(), [0, 1, 2], out, workers=1, log=lines.append)
    assert [r.status for r in again.results] == ["skipped"] * 3 and len(lines) == 3


class _ThreadBackend(LocalBackend):
    """The local backend's driver loop on threads (fake seeds need no worker processes)."""

    def __init__(self, pool: ThreadPoolExecutor, workers: int) -> None:
        super().__init__(workers)
        self._threads = pool

    @property
    def executor(self) -> ThreadPoolExecutor:  # type: ignore[override]
        return self._threads


def test_workers_bound_the_running_seeds_and_a_lost_worker_fails_one_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def fake_run_seed(task: SeedTask) -> SeedResult:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if task.seed == 3:
            raise MemoryError("the worker died")  # what a pool reports for a dead worker
        if task.seed == 1:
            return SeedResult(task.seed, task.folder, "failed", error="ValueError: bad")
        return SeedResult(task.seed, task.folder, "trained", timesteps=40)

    monkeypatch.setattr(seed_jobs, "run_seed", fake_run_seed)
    lines: list[str] = []
    with ThreadPoolExecutor(4) as pool:
        summary = train_seeds(
            _config(), [0, 1, 2, 3, 4], tmp_path, log=lines.append, runner=_ThreadBackend(pool, 2)
        )
    assert peak[0] == 2  # never more seeds at once than workers
    assert [r.status for r in summary.results] == [
        "trained",
        "failed",
        "trained",
        "failed",
        "trained",
    ]
    assert summary.failed[1].error == "worker lost: MemoryError: the worker died"
    assert sum("started" in line for line in lines) == 5
    assert sum(line.startswith("seed 1: FAILED") for line in lines) == 1
    assert (seed_folder(tmp_path, 3) / ERROR_FILE).is_file()


def test_seeds_are_checked() -> None:
    assert check_seeds([2, 0, 1]) == (2, 0, 1)
    with pytest.raises(ConfigError, match=r"--seeds repeats 1; each seed is one run folder"):
        check_seeds([1, 0, 1], "--seeds")
    with pytest.raises(ConfigError, match=r"--seeds must be >= 0 .*got -2"):
        check_seeds([0, -2], "--seeds")
    with pytest.raises(ConfigError, match="give at least one seed"):
        check_seeds([])


def test_default_workers_leave_room_for_env_processes() -> None:
    assert default_workers(_config(), 5, cpus=4) == 4
    assert default_workers(_config(), 3, cpus=8) == 3
    assert default_workers(_config(vec_env="subproc", n_envs=2), 5, cpus=4) == 2
    assert default_workers(_config(vec_env="subproc", n_envs=4), 5, cpus=2) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0", "0"], "--seeds repeats 0"),
        (["--seeds", "0", "-1"], "--seeds must be >= 0"),
        (["--seeds", "0", "1", "--seed", "3"], "give either --seed S"),
        (["--backend", "ray"], "--backend is only for multi-seed runs: add --seeds"),
        (["--seeds", "0", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["--seeds", "0", "--ray-address", "auto"], "--ray-address needs --backend ray"),
    ],
)
def test_bad_multi_seed_options_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    argv = ["train-agent", _yaml(_config(), tmp_path / "a.yaml"), "--out", str(out), *extra]
    assert main([*argv, *QUIET]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before anything is written


def test_backend_ray_without_ray_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    argv = ["train-agent", _yaml(_config(), tmp_path / "a.yaml"), "--out", str(out)]
    assert main([*argv, "--seeds", "0", "1", "--backend", "ray", *QUIET]) == 2
    assert "needs the optional extra 'ray': pip install -e \".[ray]\"" in capsys.readouterr().err
    assert not out.exists()


def test_resume_of_a_folder_that_is_not_multi_seed(
    local_runs: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = seed_folder(local_runs[0], 0)  # a finished single run, with its checkpoint
    assert main(["train-agent", "--resume", str(single), "--workers", "2", *QUIET]) == 2
    assert "--workers is only for multi-seed folders" in capsys.readouterr().err
    assert main(["train-agent", "--resume", str(tmp_path), *QUIET]) == 2
    err = capsys.readouterr().err
    assert f"{str(tmp_path)!r} has no checkpoint.json: nothing to resume" in err
    assert f"not a multi-seed folder either (no {MANIFEST}" in err
    with pytest.raises(FileNotFoundError, match="is not a multi-seed folder"):
        resume_seeds(tmp_path)
    argv = ["train-agent", "--resume", str(local_runs[0]), "--timesteps", "80", *QUIET]
    assert main(argv) == 2
    assert "takes no --timesteps" in capsys.readouterr().err


def test_a_folder_of_another_config_or_run_is_refused(
    local_runs: tuple[Path, list[str]], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"another agent config \(it differs in total_timesteps"):
        prepare_folder(local_runs[0], _config(total_timesteps=40), [0])
    with pytest.raises(FileExistsError, match=r"not a multi-seed folder .*single agent run"):
        prepare_folder(seed_folder(local_runs[0], 0), _config(), [0])
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / MANIFEST).write_text(json.dumps({"format": 1, "config": {}, "seeds": [0, 0]}))
    with pytest.raises(FileFormatError, match=r"repeats 0; .*the folder is damaged"):
        read_manifest(damaged)
