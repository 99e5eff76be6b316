"""QM9-11 from the ``qm9pack`` wheel: 11 molecular property regressions with a descriptor MLP.

The table and splits are ``qm9_data``'s, the descriptors ``qm9_descriptors``'s.

The data is the full QM9 (130,831 molecules, the same set and order as PyTorch Geometric's) that
ships inside the ``qm9pack`` wheel (install the ``qm9`` extra: ``pip install -e ".[qm9]"``).
``qm9pack`` itself is never imported (its ``__init__`` needs ``pkg_resources``, gone from current
setuptools); its CSV files are located with ``importlib.util.find_spec``. Nothing is downloaded.

Two on-disk caches (default ``~/.cache/igb-rl/qm9``), both written atomically (a temporary file in
the same folder renamed over the target):

* ``table-<key>.npz``: the parsed CSVs (targets in the usual units, atoms and coordinates of every
  molecule), keyed by the data files' names, sizes and modification times and ``TABLE_VERSION``;
* ``features-<key>.npy``: the descriptors of the selected molecules, keyed by the table key, the
  selected molecule indices, the featurisation settings and ``FEATURE_VERSION``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_backends.benchmarks.base import SPLITS, Benchmark, MetricSpec, SplitData
from mtl_backends.benchmarks.qm9_data import (
    TARGETS,
    QM9Table,
    default_cache_dir,
    load_table,
    qm9_data_dir,
    split_indices,
    table_key,
)
from mtl_backends.benchmarks.qm9_descriptors import load_features
from mtl_backends.models.hps import HardParameterSharing, mlp


class QM9Targets(Benchmark):
    """The 11 QM9 targets, standardised by the training split: what ``QM9`` and ``QM9Graph`` share.

    Subclasses open the table (``_open_table``), split it into ``rows``, set the tasks
    (``_set_targets``) and the training-split statistics (``_standardised_targets``), and
    ``_kwargs`` (the arguments that rebuild
    the benchmark). Loss: per-target MSE on the standardised targets (Nash-MTL's training loss);
    metrics: per-target MAE in the usual units (meV for the energies), lower is better.
    """

    target_mean: Tensor
    """Training-split mean of each target in the usual units ``[11]`` (float64)."""
    target_std: Tensor
    """Training-split standard deviation of each target in the usual units ``[11]`` (float64)."""
    rows: dict[str, np.ndarray]
    """Per split, row indices into the full table (GDB order)."""
    _kwargs: dict[str, Any]

    def _set_targets(self, name: str) -> None:
        """Set the benchmark's name and its 11 tasks: names, MAE metrics, lower bounds 0."""
        self.name = name
        self.task_names = tuple(t.name for t in TARGETS)
        self.metric_specs = tuple(
            MetricSpec(f"{t.name}_mae", i, higher_is_better=False) for i, t in enumerate(TARGETS)
        )
        self.lower_bounds = torch.zeros(len(TARGETS))

    @staticmethod
    def _open_table(data_dir: str | None, cache_dir: str | None) -> tuple[QM9Table, str, Path]:
        """The parsed molecule table, its content key and the cache folder of the features."""
        data_path = qm9_data_dir() if data_dir is None else Path(data_dir)
        cache = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
        table_id = table_key(data_path)
        return load_table(data_path, cache), table_id, cache

    def _standardised_targets(self, table: QM9Table) -> dict[str, Tensor]:
        """Set ``target_mean`` / ``target_std`` from the training split of ``self.rows``.

        Returns:
            Each split's targets standardised by them, ``[N, 11]`` float32.
        """
        train_y = table.targets[self.rows["train"]]
        y_mean, y_std = train_y.mean(0), train_y.std(0)
        self.target_mean = torch.from_numpy(y_mean)
        self.target_std = torch.from_numpy(y_std)
        return {
            split: torch.from_numpy(
                ((table.targets[self.rows[split]] - y_mean) / y_std).astype(np.float32)
            )
            for split in SPLITS
        }

    def original_targets(self, name: str) -> Tensor:
        """Targets of split ``name`` in the usual units ``[N, 11]`` (float64)."""
        return self.split(name).targets.double() * self.target_std + self.target_mean

    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """Per-target MSE on standardised targets ``[11]``."""
        return torch.stack(
            [F.mse_loss(out.squeeze(1), targets[:, t]) for t, out in enumerate(outputs)]
        )

    def metrics(self, outputs: list[Tensor], targets: Tensor) -> dict[str, float]:
        """Per-target MAE in the usual units (meV for the energies)."""
        std = self.target_std.to(targets.device)
        result = {}
        for t, (target, spec) in enumerate(zip(TARGETS, self.metric_specs, strict=True)):
            err = (outputs[t].squeeze(1).double() - targets[:, t].double()).abs().mean() * std[t]
            result[spec.name] = float(err) * target.metric_factor
        return result

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this benchmark (the cache and data folders excluded)."""
        return dict(self._kwargs)


class QM9(QM9Targets):
    """QM9-11: 11 molecular properties regressed from molecular descriptors (data.md §2.7).

    Data: the qm9pack wheel's 130,831 molecules, split with ``split_indices`` (10k test, 10k val,
    the rest train, or a nested ``subset``). Targets are converted to the usual units (``TARGETS``)
    and standardised with the training split's mean and standard deviation; descriptors
    (``featurize``) are standardised the same way. Inputs ``[N, 274]`` (``[N, 34]`` without
    ``rbf``); targets ``[N, 11]`` (standardised).

    Model: a SiLU MLP trunk with 11 linear heads. Loss: per-task MSE on standardised targets
    (``L* = 0``). Metrics: per-task MAE in original units (``<name>_mae``; meV for HOMO, LUMO, ZPVE,
    U0, U, H, G, as in the published tables), lower is better.

    Args:
        seed: Seed of the split (the published protocol re-splits with each run seed; here the
            split is part of the benchmark, the run seed is the trainer's).
        subset: Total molecules used (``None``: all 130,831); see ``split_indices``.
        n_val: Validation molecules (default 10,000, or ``subset // 10``).
        n_test: Test molecules (default 10,000, or ``subset // 10``).
        rbf: Include per-element-pair distance histograms in the descriptors.
        hidden: Trunk widths.
        cache_dir: Folder of the parsed-table and descriptor caches (default
            ``~/.cache/igb-rl/qm9``).
        data_dir: qm9pack's data folder (default: located in the installed wheel).

    Raises:
        MissingExtraError: ``qm9pack`` is not installed.
    """

    def __init__(
        self,
        seed: int = 0,
        subset: int | None = None,
        n_val: int | None = None,
        n_test: int | None = None,
        rbf: bool = True,
        hidden: Sequence[int] = (256, 256, 256),
        cache_dir: str | None = None,
        data_dir: str | None = None,
    ) -> None:
        self._set_targets("qm9")
        self._hidden = tuple(int(h) for h in hidden)
        self._kwargs: dict[str, Any] = {
            "seed": int(seed),
            "subset": subset,
            "n_val": n_val,
            "n_test": n_test,
            "rbf": bool(rbf),
            "hidden": list(self._hidden),
        }
        table, table_id, cache = self._open_table(data_dir, cache_dir)
        self.rows = split_indices(len(table), seed, subset, n_val, n_test)
        order = np.concatenate([self.rows[s] for s in SPLITS])
        feats, self.cache_hit = load_features(table, table_id, order, bool(rbf), cache)
        sizes = np.cumsum([0] + [len(self.rows[s]) for s in SPLITS])
        # Statistics accumulated in float64, applied in float32 (no float64 copy of the features).
        train_x = feats[sizes[0] : sizes[1]]
        x_mean = train_x.mean(0, dtype=np.float64).astype(np.float32)
        x_std = train_x.std(0, dtype=np.float64)
        x_std = np.where(x_std > 1e-8, x_std, 1.0).astype(np.float32)
        targets = self._standardised_targets(table)
        self._splits: dict[str, SplitData] = {}
        for k, split in enumerate(SPLITS):
            x = (feats[sizes[k] : sizes[k + 1]] - x_mean) / x_std
            self._splits[split] = SplitData(
                inputs=torch.from_numpy(x.astype(np.float32)), targets=targets[split]
            )
        self.input_dim = int(feats.shape[1])

    def split(self, name: str) -> SplitData:
        """Standardised descriptors ``[N, F]`` and standardised targets ``[N, 11]``."""
        self.check_split(name)
        return self._splits[name]

    def build_model(self) -> HardParameterSharing:
        """SiLU MLP ``F -> hidden`` and one linear head ``hidden[-1] -> 1`` per target."""
        encoder = mlp((self.input_dim, *self._hidden), activation=nn.SiLU)
        heads = [nn.Linear(self._hidden[-1], 1) for _ in TARGETS]
        return HardParameterSharing(encoder, heads)
