"""QM9-11 as molecular graphs with the MPNN of the Nash-MTL / FAMO / IGB QM9 experiments.

The data is ``qm9``'s (the qm9pack wheel's 130,831 molecules, the same set and order as PyTorch
Geometric's ``QM9``; install the ``qm9`` extra), the graphs are built from the coordinates
(``qm9_graph_data``), the network is ``models/mpnn.py``. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np

from mtl_backends.benchmarks.base import SPLITS, SplitData
from mtl_backends.benchmarks.qm9 import QM9Targets
from mtl_backends.benchmarks.qm9_data import (
    N_MOLECULES,
    TARGETS,
    MissingExtraError,
    split_indices,
)
from mtl_backends.benchmarks.qm9_graph_data import (
    EDGE_FEATURES,
    N_ATOM_FEATURES,
    MoleculeGraphs,
    load_atom_features,
    pack,
)
from mtl_backends.models.hps import HardParameterSharing
from mtl_backends.models.mpnn import GRAPH_INSTALL_HINT, IMPLEMENTATIONS, MPNNConfig, mpnn_hps
from mtl_backends.registry import ConfigError
from mtl_backends.results import Reference

MIN_SUBSET = 10
"""The smallest ``subset``: one test, one validation and eight training molecules."""

PUBLISHED_STL: dict[str, float] = dict(
    zip(
        (f"{t.name}_mae" for t in TARGETS),
        (0.0671, 0.1814, 60.576, 53.915, 0.5027, 4.539, 58.838, 64.244, 63.852, 66.223, 0.07212),
        strict=True,
    )
)
"""Published single-task test MAE (usual units, meV for the energies): ``BASE`` of Nash-MTL
(Navon et al., ICML 2022; AvivNavon/nash-mtl ``experiments/quantum_chemistry/utils.py``), the
Δm reference of Nash-MTL, FAMO (Liu et al., NeurIPS 2023) and IGB (Dai et al., 2023), whose
IGB4MTL trainer imports the same module."""
PUBLISHED_SOURCE = (
    "single-task MPNNs of Nash-MTL (Navon et al., ICML 2022): BASE in AvivNavon/nash-mtl "
    "experiments/quantum_chemistry/utils.py, reused by FAMO and IGB"
)


class QM9Graph(QM9Targets):
    """QM9-11 regressed from molecular graphs by Gilmer et al.'s MPNN, as Nash-MTL and IGB run it.

    Papers: Gilmer et al., ICML 2017 (https://arxiv.org/abs/1704.01212), the network; Navon et
    al., ICML 2022 (https://arxiv.org/abs/2202.01017), the multi-task protocol that FAMO
    (Liu et al., NeurIPS 2023, https://arxiv.org/abs/2306.03792) and IGB (Dai et al., UAI 2023,
    https://arxiv.org/abs/2307.15429) reuse.

    Model: ``h⁰ = ReLU(Linear(11 → 64) x)``; 3 × ``h = GRU(ReLU(NNConv(h, e)), h)`` (one NNConv,
    edge network ``Linear(2, 128) ReLU Linear(128, 64·64)``, mean aggregation; one GRU);
    ``z = ReLU(Linear(128 → 64) Set2Set(h, 3 steps))``; one ``Linear(64, 1)`` head per target.
    Everything before the heads is shared (Nash-MTL's ``shared_parameters``).

    Data and protocol as published: the molecules are shuffled with ``seed``; test is the first
    10,000, validation the next 10,000, training the remaining 110,831 (``split_indices``; with
    ``subset`` nested inside those blocks). Targets in the usual units (``TARGETS``),
    standardised by the training split's mean and standard deviation. Loss: per-target MSE on the
    standardised targets (``L* = 0``). Metrics: per-target MAE in the usual units
    (``<name>_mae``, meV for HOMO, LUMO, ZPVE, U0, U, H, G), lower is better.
    ``published_reference()`` is Nash-MTL's single-task table (``PUBLISHED_STL``).

    How this differs from the published setup (PyG's ``QM9`` with RDKit features from the SDF,
    ``Complete()`` and ``T.Distance(norm=False)``):

    * the bond table is inferred from the coordinates (covalent radii), and so are the bond-
      dependent atom features (aromatic, hybridisation, bonded hydrogens; ``qm9_graph_data``);
    * edges are the same complete graph (or, with ``cutoff``, the pairs closer than it), but their
      features are ``[bonded, distance]`` (2) instead of four bond types and the distance (5), so
      the edge network's first layer is ``Linear(2, 128)``;
    * the targets are standardised by the training split's statistics; Nash-MTL's code takes them
      from ``train_dataset.data.y``, which in PyG is the whole data set (a difference in the
      third digit of the means);
    * the split is seeded by ``seed`` with numpy, not by ``torch`` as PyG's ``shuffle()``: the
      same sizes, other molecules.

    Inputs are packed molecules ``[N, 29, 14]`` (``qm9_graph_data.pack``): the trainer indexes and
    batches them as any in-memory input, and the model's first module turns a batch into graphs,
    so the trainer needs no graph-specific code. ``implementation: pyg`` runs PyG's own
    ``NNConv`` and ``Set2Set`` on a PyG ``Batch`` (the ``graph`` extra); ``dense`` (default)
    computes the same function on padded graphs with the same parameters, equal to float
    rounding (tested) and six times cheaper per CPU training step (``models/mpnn.py``).

    Args:
        seed: Seed of the split.
        subset: Total molecules used (``None``: all 130,831); at least 10; see ``split_indices``.
        n_val: Validation molecules (default 10,000, or ``subset // 10``).
        n_test: Test molecules (default 10,000, or ``subset // 10``).
        cutoff: Edges only between atoms closer than this many Å (``None``: the complete graph,
            as published).
        implementation: ``dense`` or ``pyg`` (see above).
        dim: Hidden width of the MPNN (published 64).
        cache_dir: Folder of the parsed-table and atom-feature caches (default
            ``~/.cache/igb-rl/qm9``).
        data_dir: qm9pack's data folder (default: located in the installed wheel).

    Raises:
        ConfigError: A subset, split size, cutoff, width or implementation out of range (the
            message names the valid range or choices).
        MissingExtraError: ``qm9pack`` is not installed, or ``implementation: pyg`` without
            PyTorch Geometric (the message names the extra).
    """

    def __init__(
        self,
        seed: int = 0,
        subset: int | None = None,
        n_val: int | None = None,
        n_test: int | None = None,
        cutoff: float | None = None,
        implementation: str = "dense",
        dim: int = 64,
        cache_dir: str | None = None,
        data_dir: str | None = None,
    ) -> None:
        self._set_targets("qm9_graph")
        _check_arguments(subset, cutoff, implementation)
        self.model_config = MPNNConfig(
            node_dim=N_ATOM_FEATURES,
            edge_dim=len(EDGE_FEATURES),
            dim=dim,
            implementation=implementation,
        )
        self.cutoff = None if cutoff is None else float(cutoff)
        self._kwargs: dict[str, Any] = {
            "seed": int(seed),
            "subset": subset,
            "n_val": n_val,
            "n_test": n_test,
            "cutoff": self.cutoff,
            "implementation": implementation,
            "dim": dim,
        }
        table, table_id, cache = self._open_table(data_dir, cache_dir)
        try:
            split_rows = split_indices(len(table), seed, subset, n_val, n_test)
        except ValueError as err:
            raise ConfigError(
                f"qm9_graph: {err} (subset {subset}, n_val {n_val}, n_test {n_test}; n_val and "
                "n_test default to 10,000, or subset // 10 with a subset)"
            ) from None
        self.rows = split_rows
        order = np.concatenate([self.rows[s] for s in SPLITS])
        feats, self.cache_hit = load_atom_features(table, table_id, order, cache)
        targets = self._standardised_targets(table)
        self._splits: dict[str, SplitData] = {}
        atoms = np.cumsum([0] + [int(table.n_atoms[self.rows[s]].sum()) for s in SPLITS])
        for k, split in enumerate(SPLITS):
            packed = pack(table, self.rows[split], feats[atoms[k] : atoms[k + 1]])
            self._splits[split] = SplitData(inputs=packed, targets=targets[split])

    def split(self, name: str) -> SplitData:
        """Packed molecules ``[N, 29, 14]`` and standardised targets ``[N, 11]``."""
        self.check_split(name)
        return self._splits[name]

    def build_model(self) -> HardParameterSharing:
        """``MoleculeGraphs`` then the MPNN (shared), one ``Linear(dim, 1)`` head per target."""
        return mpnn_hps(len(TARGETS), self.model_config, MoleculeGraphs(self.cutoff))

    def published_reference(self) -> Reference:
        """Nash-MTL's single-task MAE as a Δm reference (``MTLTrainer(reference=...)``).

        Test-split numbers of the full protocol (110,831 training molecules, 300 epochs); given
        for ``val`` too, as Nash-MTL and IGB select their epoch by the validation Δm against
        these same numbers. Source: ``PUBLISHED_SOURCE``.
        """
        return {"val": dict(PUBLISHED_STL), "test": dict(PUBLISHED_STL)}


def _check_arguments(subset: int | None, cutoff: float | None, implementation: str) -> None:
    if subset is not None and not MIN_SUBSET <= subset <= N_MOLECULES:
        raise ConfigError(
            f"qm9_graph: subset must be null (all {N_MOLECULES:,} molecules) or between "
            f"{MIN_SUBSET} and {N_MOLECULES:,}, got {subset} (10% each go to validation and "
            "test unless n_val / n_test are set)"
        )
    if cutoff is not None and not (math.isfinite(cutoff) and cutoff > 0):
        raise ConfigError(
            f"qm9_graph: cutoff must be a distance > 0 in Å or null (the complete graph), got "
            f"{cutoff}"
        )
    if implementation not in IMPLEMENTATIONS:
        raise ConfigError(
            f"qm9_graph: unknown implementation {implementation!r}; valid choices: "
            f"{', '.join(IMPLEMENTATIONS)}"
        )
    if implementation == "pyg" and importlib.util.find_spec("torch_geometric") is None:
        raise MissingExtraError(
            "qm9_graph with implementation 'pyg' needs PyTorch Geometric; install the graph "
            f"extra with: {GRAPH_INSTALL_HINT} (implementation 'dense' needs no extra)"
        )


__all__ = ["PUBLISHED_SOURCE", "PUBLISHED_STL", "QM9Graph"]
