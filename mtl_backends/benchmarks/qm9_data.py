"""QM9-11 data from the ``qm9pack`` wheel: the parsed table, the targets in the usual units, splits.

The data is the full QM9 (130,831 molecules, the same set and order as PyTorch Geometric's) that
ships inside the ``qm9pack`` wheel (install the ``qm9`` extra: ``pip install -e ".[qm9]"``).
``qm9pack`` itself is never imported (its ``__init__`` needs ``pkg_resources``, gone from current
setuptools); its CSV files are located with ``importlib.util.find_spec``. Nothing is downloaded.

The parsed CSVs are cached as ``table-<key>.npz`` (default ``~/.cache/igb-rl/qm9``; targets in the
usual units, atoms and coordinates of every molecule), keyed by the data files' names, sizes and
modification times and ``TABLE_VERSION``, written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_backends.atomic import atomic_open

HAR2EV = 27.211386246
"""Hartree to electronvolt (the factor PyTorch Geometric uses)."""

ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9)
MAX_ATOMS = 29

ATOM_REFERENCES: dict[str, tuple[float, ...]] = {
    "U0": (-0.500273, -37.846772, -54.583861, -75.064579, -99.718730),
    "U": (-0.498857, -37.845355, -54.582445, -75.063162, -99.717314),
    "H": (-0.497912, -37.844411, -54.581501, -75.062219, -99.716370),
    "G": (-0.510927, -37.861317, -54.598897, -75.079532, -99.733544),
}
"""Free-atom energies in Hartree for H, C, N, O, F (PyG's ``atomrefs`` divided by ``HAR2EV``)."""


@dataclass(frozen=True)
class Target:
    """One QM9 target.

    Attributes:
        name: Task name (PyG order).
        column: Source column of the qm9pack CSV.
        unit: Unit of the target after conversion.
        metric_factor: Factor from the target's unit to the unit of the reported MAE (1000 turns
            eV into meV, as in the published tables).
        metric_unit: Unit of the reported MAE.
    """

    name: str
    column: str
    unit: str
    metric_factor: float = 1.0
    metric_unit: str = ""


TARGETS: tuple[Target, ...] = (
    Target("mu", "Dipole_debye", "D", 1.0, "D"),
    Target("alpha", "Polarizability_bohr3", "a0^3", 1.0, "a0^3"),
    Target("homo", "HOMO_au", "eV", 1000.0, "meV"),
    Target("lumo", "LUMO_au", "eV", 1000.0, "meV"),
    Target("r2", "R2_bohr2", "a0^2", 1.0, "a0^2"),
    Target("zpve", "ZPVE_au", "eV", 1000.0, "meV"),
    Target("u0", "InternalEnergy_0K_au", "eV", 1000.0, "meV"),
    Target("u", "InternalEnergy_298K_au", "eV", 1000.0, "meV"),
    Target("h", "Enthalphy_298K_au", "eV", 1000.0, "meV"),
    Target("g", "GibbsFreeEnergy_298K_au", "eV", 1000.0, "meV"),
    Target("cv", "Heatcapacity_Cv_cal_mol_K", "cal/mol/K", 1.0, "cal/mol/K"),
)
"""The 11 standard targets in PyG order ``[0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11]`` (the gap left
out): μ, α, ε_HOMO, ε_LUMO, ⟨R²⟩, ZPVE, U0, U, H, G (atomisation energies) and c_v."""

_ATOMISATION = {"u0": "U0", "u": "U", "h": "H", "g": "G"}
_HARTREE = {"homo", "lumo", "zpve"}

DATA_FILES: tuple[str, ...] = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
N_MOLECULES = 130831
PROTOCOL_TEST = 10000
PROTOCOL_VAL = 10000
TABLE_VERSION = 1

INSTALL_HINT = 'pip install -e ".[qm9]"'


class MissingExtraError(ImportError):
    """An optional dependency (a ``pyproject`` extra) is not installed."""


def default_cache_dir() -> Path:
    """``~/.cache/igb-rl/qm9``."""
    return Path.home() / ".cache" / "igb-rl" / "qm9"


def qm9_data_dir() -> Path:
    """The ``data`` folder of the installed ``qm9pack`` wheel, found without importing it.

    Raises:
        MissingExtraError: ``qm9pack`` is not installed (names the install command).
    """
    spec = importlib.util.find_spec("qm9pack")
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        raise MissingExtraError(
            f"the qm9 benchmark needs the qm9pack wheel (the real QM9 data); install the extra "
            f"with: {INSTALL_HINT}"
        )
    return Path(next(iter(locations))) / "data"


def _check_files(data_dir: Path) -> list[Path]:
    paths = [data_dir / name for name in DATA_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"QM9 data file(s) missing: {', '.join(missing)}; reinstall with {INSTALL_HINT}"
        )
    return paths


def table_key(data_dir: Path) -> str:
    """Hex digest of the data files' names, sizes and modification times and ``TABLE_VERSION``."""
    stats = []
    for path in _check_files(data_dir):
        st = path.stat()
        stats.append([path.name, st.st_size, st.st_mtime_ns])
    payload = json.dumps({"version": TABLE_VERSION, "files": stats}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class QM9Table:
    """All of QM9, parsed.

    Attributes:
        index: GDB index of each molecule ``[M]`` (1-based, increasing).
        targets: The 11 targets in their usual units ``[M, 11]`` (float64, ``TARGETS`` order).
        n_atoms: Atoms per molecule ``[M]``.
        offsets: Start of each molecule's atoms in ``elements``/``coords`` ``[M + 1]``.
        elements: Element code of every atom (0..4 for H, C, N, O, F) ``[A]``.
        coords: Coordinates in Å of every atom ``[A, 3]``.
    """

    index: np.ndarray
    targets: np.ndarray
    n_atoms: np.ndarray
    offsets: np.ndarray
    elements: np.ndarray
    coords: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


def convert_targets(raw: dict[str, np.ndarray], element_counts: np.ndarray) -> np.ndarray:
    """The 11 targets in the usual units from qm9pack columns.

    Args:
        raw: Column name -> values ``[M]`` (Hartree for energies, as in the CSV).
        element_counts: Atoms of each element ``[M, 5]`` (H, C, N, O, F).

    Returns:
        ``[M, 11]`` in ``TARGETS`` order: HOMO, LUMO and ZPVE × ``HAR2EV``; atomisation energies
        ``(E - Σ_atoms ref) × HAR2EV``; the other targets unchanged.
    """
    out = np.empty((element_counts.shape[0], len(TARGETS)), dtype=np.float64)
    for k, target in enumerate(TARGETS):
        values = np.asarray(raw[target.column], dtype=np.float64)
        if target.name in _HARTREE:
            values = values * HAR2EV
        elif target.name in _ATOMISATION:
            refs = np.asarray(ATOM_REFERENCES[_ATOMISATION[target.name]], dtype=np.float64)
            values = (values - element_counts @ refs) * HAR2EV
        out[:, k] = values
    return out


_STRIP = str.maketrans("", "", "[]' ")


def read_table(data_dir: Path) -> QM9Table:
    """Parse the three qm9pack CSVs (a few seconds for the full set).

    Coordinate strings such as ``"[[0.5,0.,1.],...]"`` (Fortran-style ``0.``) are parsed in one
    pass by numpy; element symbols are single characters (H, C, N, O, F).
    """
    csv.field_size_limit(sys.maxsize)
    columns = [t.column for t in TARGETS]
    index: list[str] = []
    n_atoms: list[str] = []
    elements: list[str] = []
    coords: list[str] = []
    values: list[list[str]] = []
    for path in _check_files(data_dir):
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            pos = {name: i for i, name in enumerate(header)}
            missing = [
                c for c in ["Index", "N_atoms", "Elements", "XYZ_Ang", *columns] if c not in pos
            ]
            if missing:
                raise ValueError(f"{path} lacks column(s) {', '.join(missing)}")
            i_idx, i_n, i_el, i_xyz = pos["Index"], pos["N_atoms"], pos["Elements"], pos["XYZ_Ang"]
            i_cols = [pos[c] for c in columns]
            for row in reader:
                index.append(row[i_idx])
                n_atoms.append(row[i_n])
                elements.append(row[i_el].translate(_STRIP).replace(",", ""))
                coords.append(row[i_xyz].translate(_STRIP))
                values.append([row[i] for i in i_cols])
    n = np.asarray(n_atoms, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n)])
    lookup = np.full(256, -1, dtype=np.int8)
    for code, symbol in enumerate(ELEMENTS):
        lookup[ord(symbol)] = code
    el = lookup[np.frombuffer("".join(elements).encode("ascii"), dtype=np.uint8)]
    xyz = np.fromstring(",".join(coords), dtype=np.float64, sep=",").reshape(-1, 3)
    if el.shape[0] != offsets[-1] or xyz.shape[0] != offsets[-1] or bool((el < 0).any()):
        raise ValueError("QM9 CSV: atom counts, elements and coordinates disagree")
    counts = _element_counts(el, offsets)
    raw = np.asarray(values, dtype=np.float64).reshape(-1, len(columns))
    targets = convert_targets({c: raw[:, k] for k, c in enumerate(columns)}, counts)
    return QM9Table(
        index=np.asarray(index, dtype=np.int64),
        targets=targets,
        n_atoms=n,
        offsets=offsets,
        elements=el,
        coords=xyz.astype(np.float32),
    )


def _element_counts(elements: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    mol = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    counts = np.zeros((len(offsets) - 1, len(ELEMENTS)), dtype=np.float64)
    np.add.at(counts, (mol, elements.astype(np.int64)), 1.0)
    return counts


def load_table(data_dir: Path | None = None, cache_dir: Path | None = None) -> QM9Table:
    """The parsed table, from ``cache_dir`` when present, else parsed and cached.

    Args:
        data_dir: qm9pack's data folder (default: located with ``qm9_data_dir``).
        cache_dir: Cache folder (default ``~/.cache/igb-rl/qm9``).
    """
    data_dir = qm9_data_dir() if data_dir is None else Path(data_dir)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    path = cache_dir / f"table-{table_key(data_dir)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return QM9Table(**{k: z[k] for k in QM9Table.__dataclass_fields__})
    table = read_table(data_dir)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **{k: getattr(table, k) for k in QM9Table.__dataclass_fields__})
    return table


def cached_array(path: Path, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """The array cached at ``path``, else ``compute()`` written there atomically.

    Returns:
        The array and whether it came from the cache.
    """
    if path.is_file():
        return np.load(path, allow_pickle=False), True
    array = compute()
    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return array, False


def split_indices(
    n_molecules: int,
    seed: int,
    subset: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
) -> dict[str, np.ndarray]:
    """Seeded split like Nash-MTL / FAMO / IGB4MTL's.

    The molecules are shuffled; test is ``[:10k]``, val ``[10k:20k]``, train the rest.

    With ``subset = S`` the splits are nested in the full protocol's: test = the first
    ``n_test`` molecules of the full test block, val the first ``n_val`` of the full val block,
    train the first ``S - n_val - n_test`` of the full train block (``n_val`` and ``n_test``
    default to ``S // 10``). A subset's test molecules are therefore always full-protocol test
    molecules.

    Args:
        n_molecules: Molecules in the table.
        seed: Seed of the permutation.
        subset: Total molecules used (``None``: all).
        n_val: Validation molecules (``None``: 10,000, or ``subset // 10``).
        n_test: Test molecules (``None``: 10,000, or ``subset // 10``).

    Returns:
        Split name -> row indices into the table.
    """
    block = PROTOCOL_TEST + PROTOCOL_VAL
    default = PROTOCOL_TEST if subset is None else subset // 10
    n_test = default if n_test is None else n_test
    n_val = default if n_val is None else n_val
    if not (1 <= n_test <= PROTOCOL_TEST and 1 <= n_val <= PROTOCOL_VAL):
        raise ValueError(f"n_test and n_val must lie in 1..10000, got {n_test} and {n_val}")
    available = n_molecules - block
    n_train = available if subset is None else subset - n_val - n_test
    if not 1 <= n_train <= available:
        raise ValueError(
            f"subset {subset} leaves {n_train} training molecules; valid: "
            f"{n_val + n_test + 1}..{n_val + n_test + available}"
        )
    perm = np.random.default_rng(seed).permutation(n_molecules)
    return {
        "train": perm[block : block + n_train],
        "val": perm[PROTOCOL_TEST : PROTOCOL_TEST + n_val],
        "test": perm[:n_test],
    }
