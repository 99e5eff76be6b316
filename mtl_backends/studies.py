"""Resumable Optuna studies in a local SQLite file (``igb tune-static``, ``igb tune-agent``).

A study file holds one named study, the settings its trials depend on (as a user attribute) and
its *finished* trials only: a search runs each trial in a study in memory and adds it to the file
when it ends, so a search killed mid-trial leaves nothing to clean up, and running again continues
where the file stops. A file made with other settings is refused with the differences named. One
process per file (an advisory lock). Each trial's TPE sampler is seeded by the search seed and the
number of trials before it, so a trial depends only on the study's history: a resumed search draws
what an uninterrupted one would have.

Optuna (the ``tune`` extra) is imported inside ``import_optuna`` only: importing this module never
loads it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mtl_backends.config import check_seed
from mtl_backends.registry import ConfigError

INSTALL_HINT = 'pip install "igb-rl[tune]"'

PRUNERS: tuple[str, ...] = ("median", "none")
"""Pruners of a search: Optuna's ``MedianPruner``, or no pruning."""


def check_search_settings(
    trials: int, search_seed: int, startup_trials: int, pruner: str, prune_startup_trials: int
) -> None:
    """Refuse a search's trial budget, seed, startup trials or pruner that cannot work.

    Raises:
        ConfigError: The first bad setting, named as its field.
    """
    if trials < 1:
        raise ConfigError(f"trials (the trial budget) must be >= 1, got {trials}")
    check_seed(search_seed, "search_seed")
    if startup_trials < 1:
        raise ConfigError(f"startup_trials must be >= 1, got {startup_trials}")
    if pruner not in PRUNERS:
        raise ConfigError(f"unknown pruner {pruner!r}; valid choices: {', '.join(PRUNERS)}")
    if prune_startup_trials < 1:
        raise ConfigError(f"prune_startup_trials must be >= 1, got {prune_startup_trials}")


def make_pruner(optuna: Any, pruner: str, prune_startup_trials: int) -> Any:
    """Optuna's pruner of a search's ``pruner`` setting."""
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=prune_startup_trials)
    return optuna.pruners.NopPruner()


def import_optuna(purpose: str = "the TPE search of tune-static", alternative: str = "") -> Any:
    """The ``optuna`` module, or an ``ImportError`` naming the ``tune`` extra.

    Args:
        purpose: What needs optuna, for the message.
        alternative: A way around it, appended to the message (e.g. another search).
    """
    try:
        import optuna
    except ImportError:
        raise ImportError(
            f"{purpose} needs optuna; install the extra with: {INSTALL_HINT}"
            + (f" ({alternative})" if alternative else "")
        ) from None
    return optuna


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """``key: study X, now Y`` for every leaf where two nested settings mappings differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f"{where}.{key}" if where else str(key)
            out += differences(old.get(key), new.get(key), name)
        return out
    return [] if old == new else [f"{where or 'settings'}: study {old!r}, now {new!r}"]


def check_study_path(study: str | Path, command: str) -> Path:
    """The study file's path, checked: not a folder, its folder exists, SQLite if not empty.

    Raises:
        IsADirectoryError: The path is a folder.
        FileNotFoundError: Its folder does not exist (nothing is created: usually a typo).
        ValueError: A non-empty file that is not an SQLite database.
    """
    path = Path(study).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"study file {str(path)!r} is a folder; give a file path")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"the folder of study file {str(path)!r} does not exist ({str(path.parent)!r}); "
            "create it first or choose another path"
        )
    if path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\x00":
            raise ValueError(
                f"study file {str(path)!r} is not an SQLite database; give the file an earlier "
                f"{command} --study wrote, or a new path"
            )
    return path


@contextlib.contextmanager
def exclusive(path: Path, command: str) -> Iterator[None]:
    """Hold an advisory lock on the study file: one search per study at a time.

    Two processes on one study would each resume the other's running trial as stale.

    Raises:
        BlockingIOError: Another process holds the file.
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform (Windows): unguarded
        yield
        return
    with path.open("ab") as handle:  # an empty file is a valid new SQLite database
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BlockingIOError(
                f"study file {str(path)!r} is in use by another {command} process; wait "
                "for it to finish (one search per study file)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_record(
    optuna: Any,
    storage: Any,
    path: Path,
    settings: Mapping[str, Any],
    study_name: str,
    command: str,
    direction: str,
) -> Any:
    """The study ``study_name`` of the file at ``path``, made (with ``settings``) or checked.

    Raises:
        ValueError: The file holds other studies, trials without settings, or was made with
            other settings (the differences are named).
    """
    where = f"study file {str(path)!r}"
    names = optuna.get_all_study_names(storage)
    if names and study_name not in names:
        raise ValueError(
            f"{where} holds other Optuna studies ({', '.join(names)}), not an {command} "
            "study; give a new path"
        )
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction=direction, load_if_exists=True
    )
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        if study.trials:
            raise ValueError(f"{where} holds trials without {command} settings; give a new path")
        study.set_user_attr("settings", dict(settings))
        return study
    diff = differences(recorded, dict(settings))
    if diff:
        raise ValueError(
            f"{where} was made with other settings, so its trials do not apply: "
            f"{'; '.join(diff)}; rerun with the study's settings or give a new --study path"
        )
    return study


def finished_trials(optuna: Any, study: Any) -> list[Any]:
    """The study's complete and pruned trials, in order."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return list(study.get_trials(deepcopy=False, states=states))


def seeded_tpe_sampler(
    optuna: Any, search_seed: int, n_finished: int, startup_trials: int, multivariate: bool
) -> Any:
    """The TPE sampler of the next trial, seeded by the search seed and the trials so far.

    A fresh sampler per trial makes a trial depend only on the study's history, not on how many
    processes ran it: a resumed search draws what an uninterrupted one would have.
    """
    seed = int(np.random.SeedSequence([search_seed, n_finished]).generate_state(1)[0])
    with warnings.catch_warnings():
        # multivariate TPE is experimental in optuna 4 (it models the parameters jointly).
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            n_startup_trials=startup_trials,
            seed=seed,
            multivariate=multivariate,
            constant_liar=False,
        )


@contextlib.contextmanager
def study_file(
    optuna: Any,
    path: Path | None,
    settings: Mapping[str, Any],
    study_name: str,
    command: str,
    direction: str,
) -> Iterator[Any]:
    """The file's study while it is locked (``None`` without a path); connections closed after."""
    if path is None:
        yield None
        return
    with exclusive(path, command):
        storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
        try:
            yield open_record(optuna, storage, path, settings, study_name, command, direction)
        finally:
            # Release the file's connections when done (a resumed search may open it next).
            storage.engine.dispose()


__all__ = [
    "INSTALL_HINT",
    "PRUNERS",
    "check_search_settings",
    "check_study_path",
    "differences",
    "exclusive",
    "finished_trials",
    "import_optuna",
    "make_pruner",
    "open_record",
    "seeded_tpe_sampler",
    "study_file",
]
