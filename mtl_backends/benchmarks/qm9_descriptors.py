"""Molecular descriptors of QM9 molecules (Coulomb-matrix spectrum, element counts, distance RBFs).

The descriptors of the selected molecules are cached as ``features-<key>.npy`` (keyed by the table
key, the selected molecule indices, the featurisation settings and ``FEATURE_VERSION``), written
atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mtl_backends.benchmarks.qm9_data import (
    ATOMIC_NUMBERS,
    ELEMENTS,
    MAX_ATOMS,
    QM9Table,
    cached_array,
)

FEATURE_VERSION = 1
RBF_CENTERS = np.linspace(0.8, 5.0, 16)
RBF_WIDTH = 0.25
_PAIRS = [(a, b) for a in range(len(ELEMENTS)) for b in range(a, len(ELEMENTS))]


def featurize(table: QM9Table, rows: np.ndarray, rbf: bool = True, chunk: int = 1024) -> np.ndarray:
    """Descriptors of the molecules ``rows`` (data.md §2.7).

    Per molecule: the 29 eigenvalues of the Coulomb matrix (diagonal ``0.5·Z^2.4``, off-diagonal
    ``Z_i Z_j / r_ij`` with r in Å, zero-padded to 29 atoms) sorted by decreasing magnitude; the
    counts of H, C, N, O, F; and, with ``rbf``, per element pair (15 pairs) a histogram of the
    interatomic distances smoothed by 16 Gaussians (centres 0.8..5 Å, width 0.25 Å).

    Args:
        table: The parsed data.
        rows: Row indices into ``table``.
        rbf: Include the distance histograms (274 features instead of 34).
        chunk: Molecules per vectorised block.

    Returns:
        Features ``[len(rows), 274 or 34]`` (float32).
    """
    z_of = np.asarray(ATOMIC_NUMBERS, dtype=np.float64)
    n_pairs = len(_PAIRS)
    pair_id = -np.ones((len(ELEMENTS), len(ELEMENTS)), dtype=np.int64)
    for p, (a, b) in enumerate(_PAIRS):
        pair_id[a, b] = pair_id[b, a] = p
    out = []
    eye = np.eye(MAX_ATOMS, dtype=bool)
    for start in range(0, len(rows), chunk):
        block = np.asarray(rows[start : start + chunk])
        m = len(block)
        codes = -np.ones((m, MAX_ATOMS), dtype=np.int64)
        xyz = np.zeros((m, MAX_ATOMS, 3), dtype=np.float64)
        for i, r in enumerate(block):
            lo, hi = table.offsets[r], table.offsets[r + 1]
            codes[i, : hi - lo] = table.elements[lo:hi]
            xyz[i, : hi - lo] = table.coords[lo:hi]
        present = codes >= 0
        z = np.where(present, z_of[np.maximum(codes, 0)], 0.0)
        dist = np.linalg.norm(xyz[:, :, None, :] - xyz[:, None, :, :], axis=-1)
        both = present[:, :, None] & present[:, None, :]
        off = both & ~eye
        cm = np.where(off, z[:, :, None] * z[:, None, :] / np.where(off, dist, 1.0), 0.0)
        cm[:, eye] = 0.5 * z**2.4
        eig = np.linalg.eigvalsh(cm)
        order = np.argsort(-np.abs(eig), axis=1)
        feats: list[np.ndarray] = [np.take_along_axis(eig, order, axis=1)]
        counts = np.stack([(codes == e).sum(1) for e in range(len(ELEMENTS))], axis=1)
        feats.append(counts.astype(np.float64))
        if rbf:
            iu, ju = np.triu_indices(MAX_ATOMS, k=1)
            valid = present[:, iu] & present[:, ju]  # [m, P] atom pairs that exist
            mol, pair = np.nonzero(valid)
            d = dist[mol, iu[pair], ju[pair]]
            pid = pair_id[codes[mol, iu[pair]], codes[mol, ju[pair]]]
            g = np.exp(-((d[:, None] - RBF_CENTERS) ** 2) / (2 * RBF_WIDTH**2))  # [V, 16]
            slot = mol * n_pairs + pid
            hist = np.stack(
                [
                    np.bincount(slot, weights=g[:, k], minlength=m * n_pairs)
                    for k in range(g.shape[1])
                ],
                axis=1,
            )
            feats.append(hist.reshape(m, -1))
        out.append(np.concatenate(feats, axis=1).astype(np.float32))
    width = MAX_ATOMS + len(ELEMENTS) + (n_pairs * len(RBF_CENTERS) if rbf else 0)
    return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)


def feature_key(table_id: str, rows: np.ndarray, rbf: bool) -> str:
    """Hex digest of everything the cached descriptors depend on."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": FEATURE_VERSION, "table": table_id, "rbf": rbf}).encode())
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def load_features(
    table: QM9Table, table_id: str, rows: np.ndarray, rbf: bool, cache_dir: Path
) -> tuple[np.ndarray, bool]:
    """Descriptors of ``rows``, from the cache when present, else computed and cached.

    Returns:
        The features and whether they came from the cache.
    """
    path = Path(cache_dir) / f"features-{feature_key(table_id, rows, rbf)}.npy"
    return cached_array(path, lambda: featurize(table, rows, rbf=rbf))
