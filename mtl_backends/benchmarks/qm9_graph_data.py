"""QM9 molecules as graphs without the SDF bond table: bonds, atom features, edges, packing.

qm9pack gives each molecule's elements and coordinates (Å), not the SDF bond table PyTorch
Geometric's ``QM9`` reads with RDKit. Everything bond-dependent is inferred from the geometry:

* **Bonds**: atoms ``i, j`` are bonded when ``d_ij < 1.15 (r_i + r_j)`` with the covalent radii
  of Cordero et al. (Dalton Trans. 2008; H 0.31, C 0.76, N 0.71, O 0.66, F 0.57 Å). On all
  130,831 molecules this leaves one hydrogen without a bond and one carbon with five (two odd
  geometries); at 1.2 about 3,400 carbons of strained rings get five.
* **Atom features** (PyG's 11, in PyG's order): one-hot H, C, N, O, F; atomic number; aromatic;
  sp, sp2, sp3; bonded hydrogens. Hybridisation comes from the bond count and angles instead of
  RDKit: H none; F sp3; four bonds sp3; three bonds sp2 when the three bond angles add up to
  more than 345° (planar), else sp3; two bonds sp when the angle exceeds 165°, else sp3 for O and
  sp2 for C and N; one bond sp2 for O (a carbonyl) and sp for C and N (nitriles). Aromatic: the
  atoms of a 5- or 6-membered ring of sp2 atoms (a 5-ring may hold one two-bonded O, as furan).
  RDKit's rules differ at the edges (e.g. it calls an ester's single-bonded O sp2).
* **Edges** (``MoleculeGraphs``): the complete graph of each molecule, as Nash-MTL's
  ``Complete()`` transform (or, with ``cutoff``, pairs closer than it), with two features: the
  inferred bond (0/1) and the distance in Å (``T.Distance(norm=False)``). The published edge
  features are PyG's four bond types from the SDF (single, double, triple, aromatic; zero for
  non-bonded pairs) and the distance: five features, here two.

Molecules are packed as ``[M, 29, 14]`` float tensors: per atom the 11 features and the
coordinates, padding rows all zero (an atom exists where its one-hot is not zero). The trainer
indexes them like any in-memory input; ``MoleculeGraphs`` (the first module of the model) turns a
batch into ``PaddedGraphs``. The atom features of the selected molecules are cached as
``graph-<key>.npy`` (keyed by the table, the rows and ``GRAPH_FEATURE_VERSION``), written
atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mtl_backends.benchmarks.qm9_data import (
    ATOMIC_NUMBERS,
    ELEMENTS,
    MAX_ATOMS,
    QM9Table,
    cached_array,
)
from mtl_backends.models.mpnn import PaddedGraphs

GRAPH_FEATURE_VERSION = 1
COVALENT_RADII: tuple[float, ...] = (0.31, 0.76, 0.71, 0.66, 0.57)
"""Covalent radii in Å of H, C, N, O, F (Cordero et al., Dalton Trans. 2008)."""
BOND_TOLERANCE = 1.15
"""Atoms closer than this multiple of their covalent radii's sum are bonded."""
ATOM_FEATURES: tuple[str, ...] = (
    "H", "C", "N", "O", "F", "atomic_number", "aromatic", "sp", "sp2", "sp3", "num_hs",
)  # fmt: skip
"""The 11 atom features, in PyG's ``QM9`` order."""
N_ATOM_FEATURES = len(ATOM_FEATURES)
CHANNELS = N_ATOM_FEATURES + 3
"""Per-atom channels of a packed molecule: the features, then x, y, z in Å."""
EDGE_FEATURES: tuple[str, ...] = ("bonded", "distance")
PLANAR_DEGREES = 345.0
LINEAR_DEGREES = 165.0
_H, _C, _N, _O, _F = range(len(ELEMENTS))


def bonds(elements: Tensor, coords: Tensor) -> tuple[Tensor, Tensor]:
    """Inferred bonds and distances of padded molecules.

    Args:
        elements: Element codes ``[B, n]`` (0..4 for H, C, N, O, F; -1 padding).
        coords: Coordinates in Å ``[B, n, 3]``.

    Returns:
        ``bonded`` ``[B, n, n]`` (bool, symmetric, no self pairs, none with padding) and the
        distances ``[B, n, n]``.
    """
    present = elements >= 0
    radii = torch.tensor(COVALENT_RADII, dtype=coords.dtype, device=coords.device)
    r = torch.where(present, radii[elements.clamp_min(0)], torch.zeros_like(coords[..., 0]))
    # Differences, not ``cdist``: its matrix-product path (over 25 atoms) loses precision and
    # would make a molecule's distances depend on the other molecules of its batch.
    dist = (coords.unsqueeze(2) - coords.unsqueeze(1)).norm(dim=-1)
    n = elements.shape[1]
    pair = present.unsqueeze(2) & present.unsqueeze(1)
    pair &= ~torch.eye(n, dtype=torch.bool, device=elements.device)
    bonded = pair & (dist < BOND_TOLERANCE * (r.unsqueeze(2) + r.unsqueeze(1)))
    return bonded, dist


def _hybridisation(elements: Tensor, coords: Tensor, bonded: Tensor) -> Tensor:
    """``[B, n, 3]`` one-hot sp, sp2, sp3 by the rules of the module docstring."""
    degree = bonded.sum(-1)
    # The (up to) four first neighbours of each atom, their unit bond vectors and angles.
    order = torch.argsort((~bonded).to(torch.int8), dim=-1, stable=True)[..., :4]
    vectors = torch.gather(
        coords.unsqueeze(1).expand(-1, coords.shape[1], -1, -1),
        2,
        order.unsqueeze(-1).expand(-1, -1, -1, 3),
    ) - coords.unsqueeze(2)
    unit = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    cos = (unit.unsqueeze(3) * unit.unsqueeze(2)).sum(-1).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.acos(cos))
    two = angle[..., 0, 1]
    three = angle[..., 0, 1] + angle[..., 0, 2] + angle[..., 1, 2]
    el = elements
    sp = ((degree == 2) & (two > LINEAR_DEGREES)) | ((degree == 1) & ((el == _C) | (el == _N)))
    sp2 = (
        ((degree == 3) & (three > PLANAR_DEGREES))
        | ((degree == 2) & (two <= LINEAR_DEGREES) & ((el == _C) | (el == _N)))
        | ((degree == 1) & (el == _O))
    )
    sp3 = (
        (el == _F)
        | (degree >= 4)
        | ((degree == 3) & (three <= PLANAR_DEGREES))
        | ((degree == 2) & (two <= LINEAR_DEGREES) & (el == _O))
    )
    heavy = el > _H
    return torch.stack([sp & heavy, sp2 & heavy, sp3 & heavy], dim=-1)


def _ring_atoms(adjacency: np.ndarray, candidates: np.ndarray, elements: np.ndarray) -> np.ndarray:
    """Atoms on a 5- or 6-membered cycle of ``candidates`` (at most one O, and only in 5-rings)."""
    nodes = np.flatnonzero(candidates)
    on_ring = np.zeros(len(candidates), dtype=bool)
    if len(nodes) < 5:
        return on_ring
    neighbours = {
        int(i): [int(j) for j in np.flatnonzero(adjacency[i] & candidates)] for i in nodes
    }

    def extend(path: list[int]) -> None:
        for j in neighbours[path[-1]]:
            if j == path[0] and len(path) in (5, 6):
                oxygens = int((elements[path] == _O).sum())
                if oxygens == 0 or (oxygens == 1 and len(path) == 5):
                    on_ring[path] = True
            elif j > path[0] and j not in path and len(path) < 6:
                extend([*path, j])

    for s in nodes:
        extend([int(s)])
    return on_ring


def atom_features(table: QM9Table, rows: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """The 11 atom features of the molecules ``rows`` (module docstring), atoms in table order.

    Args:
        table: The parsed data.
        rows: Row indices into ``table``.
        chunk: Molecules per vectorised block.

    Returns:
        ``[Σ atoms, 11]`` (uint8): the atoms of ``rows[0]``, then of ``rows[1]``, ...
    """
    z_of = np.asarray(ATOMIC_NUMBERS, dtype=np.uint8)
    out: list[np.ndarray] = []
    for start in range(0, len(rows), chunk):
        codes, xyz = pad(table, np.asarray(rows[start : start + chunk]))
        el = torch.from_numpy(codes)
        pos = torch.from_numpy(xyz)
        bonded, _ = bonds(el, pos)
        hybrid = _hybridisation(el, pos, bonded).numpy()
        num_hs = (bonded & (el == _H).unsqueeze(1)).sum(-1).numpy()
        adjacency = bonded.numpy()
        present = codes >= 0
        aromatic = np.zeros(codes.shape, dtype=bool)
        candidates = (hybrid[..., 1] | ((codes == _O) & (adjacency.sum(-1) == 2))) & (codes > _H)
        for m in np.flatnonzero(candidates.sum(1) >= 5):
            aromatic[m] = _ring_atoms(adjacency[m], candidates[m], codes[m])
        feats = np.zeros((*codes.shape, N_ATOM_FEATURES), dtype=np.uint8)
        safe = np.maximum(codes, 0)
        feats[..., : len(ELEMENTS)] = np.eye(len(ELEMENTS), dtype=np.uint8)[safe]
        feats[..., 5] = z_of[safe]
        feats[..., 6] = aromatic
        feats[..., 7:10] = hybrid
        feats[..., 10] = num_hs
        out.append(feats[present])
    return np.concatenate(out) if out else np.zeros((0, N_ATOM_FEATURES), dtype=np.uint8)


def pad(table: QM9Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element codes ``[M, 29]`` (-1 padding, int64) and coordinates ``[M, 29, 3]`` of ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    counts = table.n_atoms[rows]
    molecule = np.repeat(np.arange(len(rows)), counts)
    starts = table.offsets[rows]
    position = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    atoms = np.repeat(starts, counts) + position
    codes = np.full((len(rows), MAX_ATOMS), -1, dtype=np.int64)
    xyz = np.zeros((len(rows), MAX_ATOMS, 3), dtype=np.float32)
    codes[molecule, position] = table.elements[atoms]
    xyz[molecule, position] = table.coords[atoms]
    return codes, xyz


def pack(table: QM9Table, rows: np.ndarray, features: np.ndarray) -> Tensor:
    """Packed molecules ``[M, 29, 14]`` (float32): atom features, then coordinates in Å.

    Args:
        table: The parsed data.
        rows: Row indices into ``table``.
        features: ``atom_features(table, rows)``.
    """
    codes, xyz = pad(table, rows)
    present = codes >= 0
    packed = np.zeros((len(rows), MAX_ATOMS, CHANNELS), dtype=np.float32)
    packed[present, :N_ATOM_FEATURES] = features
    packed[..., N_ATOM_FEATURES:] = xyz
    return torch.from_numpy(packed)


def graph_feature_key(table_id: str, rows: np.ndarray) -> str:
    """Hex digest of everything the cached atom features depend on."""
    h = hashlib.sha256()
    settings = {
        "version": GRAPH_FEATURE_VERSION,
        "table": table_id,
        "radii": COVALENT_RADII,
        "tolerance": BOND_TOLERANCE,
    }
    h.update(json.dumps(settings).encode())
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def load_atom_features(
    table: QM9Table, table_id: str, rows: np.ndarray, cache_dir: Path
) -> tuple[np.ndarray, bool]:
    """Atom features of ``rows``, from the cache when present, else computed and cached.

    Returns:
        The features and whether they came from the cache.
    """
    path = Path(cache_dir) / f"graph-{graph_feature_key(table_id, rows)}.npy"
    return cached_array(path, lambda: atom_features(table, rows))


class MoleculeGraphs(nn.Module):
    """Packed molecules ``[B, 29, 14]`` to ``PaddedGraphs``: the model's first module (no weights).

    Nodes: the 11 atom features. Edges: every ordered pair of distinct atoms of a molecule (the
    complete graph, Nash-MTL's ``Complete()``), or with ``cutoff`` the pairs closer than it; edge
    features ``[bonded, distance in Å]``. The batch is cut to its largest molecule.

    Args:
        cutoff: Keep only pairs closer than this many Å (``None``: the complete graph).
    """

    def __init__(self, cutoff: float | None = None) -> None:
        super().__init__()
        self.cutoff = cutoff

    def forward(self, packed: Tensor) -> PaddedGraphs:
        """The graphs of a batch of packed molecules."""
        onehot = packed[..., : len(ELEMENTS)]
        present = onehot.sum(-1) > 0
        n = max(int(present.sum(1).max()), 1) if packed.shape[0] else 1
        packed, onehot, present = packed[:, :n], onehot[:, :n], present[:, :n]
        elements = torch.where(
            present, onehot.argmax(-1), torch.full_like(present, -1, dtype=torch.long)
        )
        coords = packed[..., N_ATOM_FEATURES:]
        bonded, dist = bonds(elements, coords)
        pair = present.unsqueeze(2) & present.unsqueeze(1)
        pair &= ~torch.eye(n, dtype=torch.bool, device=packed.device)
        if self.cutoff is not None:
            pair &= dist < self.cutoff
        edges = torch.stack([bonded.to(packed.dtype), dist], dim=-1) * pair.unsqueeze(-1)
        return PaddedGraphs(packed[..., :N_ATOM_FEATURES], present, edges, pair)

    def extra_repr(self) -> str:
        """The cutoff, in the module's printed form."""
        return f"cutoff={self.cutoff}"


__all__ = [
    "ATOM_FEATURES",
    "BOND_TOLERANCE",
    "CHANNELS",
    "COVALENT_RADII",
    "EDGE_FEATURES",
    "GRAPH_FEATURE_VERSION",
    "MoleculeGraphs",
    "atom_features",
    "bonds",
    "graph_feature_key",
    "load_atom_features",
    "pack",
    "pad",
]
