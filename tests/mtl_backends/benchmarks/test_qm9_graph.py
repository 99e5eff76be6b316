from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import shutil
import sys
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from torch import nn

from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark, qm9_graph_data
from mtl_backends.benchmarks.qm9_data import (
    TARGETS,
    MissingExtraError,
    QM9Table,
    default_cache_dir,
    qm9_data_dir,
    table_key,
)
from mtl_backends.benchmarks.qm9_graph import PUBLISHED_STL, QM9Graph
from mtl_backends.benchmarks.qm9_graph_data import (
    CHANNELS,
    MoleculeGraphs,
    atom_features,
    pack,
)
from mtl_backends.config import TrainConfig
from mtl_backends.models import mpnn
from mtl_backends.models.hps import HardParameterSharing
from mtl_backends.models.mpnn import MPNN, MPNNConfig, PaddedGraphs, mpnn_hps
from mtl_backends.registry import ConfigError
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import make_weighting

ROOT = Path(__file__).resolve().parents[3]
HAVE_QM9PACK = importlib.util.find_spec("qm9pack") is not None
HAVE_PYG = importlib.util.find_spec("torch_geometric") is not None
needs_qm9pack = pytest.mark.skipif(
    not HAVE_QM9PACK, reason='qm9pack is not installed (pip install -e ".[qm9]")'
)
needs_pyg = pytest.mark.skipif(
    not HAVE_PYG, reason='torch_geometric is not installed (pip install -e ".[graph]")'
)

# Hand-made molecules: element codes (0..4 = H, C, N, O, F) and coordinates in Å.
Molecule = tuple[list[int], list[list[float]]]
WATER: Molecule = ([3, 0, 0], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
METHANE: Molecule = (
    [1, 0, 0, 0, 0],
    [[0, 0, 0], [0.629, 0.629, 0.629], [0.629, -0.629, -0.629], [-0.629, 0.629, -0.629],
     [-0.629, -0.629, 0.629]],
)  # fmt: skip
HCN: Molecule = ([0, 1, 2], [[-1.066, 0, 0], [0, 0, 0], [1.156, 0, 0]])
FORMALDEHYDE: Molecule = (
    [1, 3, 0, 0],
    [[0, 0, 0], [1.21, 0, 0], [-0.55, 0.94, 0], [-0.55, -0.94, 0]],
)
BENZENE: Molecule = (
    [1] * 6 + [0] * 6,
    [[r * math.cos(k * math.pi / 3), r * math.sin(k * math.pi / 3), 0.0]
     for r in (1.39, 2.47) for k in range(6)],
)  # fmt: skip
MOLECULES = [WATER, METHANE, HCN, FORMALDEHYDE, BENZENE]

# The 11 features (one-hot H C N O F, Z, aromatic, sp, sp2, sp3, bonded H), worked out by hand.
H_ATOM = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
EXPECTED_FEATURES = [
    [[0, 0, 0, 1, 0, 8, 0, 0, 0, 1, 2], H_ATOM, H_ATOM],  # water: O bent, sp3
    [[0, 1, 0, 0, 0, 6, 0, 0, 0, 1, 4]] + [H_ATOM] * 4,  # methane: sp3 C, four H
    [H_ATOM, [0, 1, 0, 0, 0, 6, 0, 1, 0, 0, 1], [0, 0, 1, 0, 0, 7, 0, 1, 0, 0, 0]],  # H-C≡N: sp
    [[0, 1, 0, 0, 0, 6, 0, 0, 1, 0, 2], [0, 0, 0, 1, 0, 8, 0, 0, 1, 0, 0], H_ATOM, H_ATOM],
    [[0, 1, 0, 0, 0, 6, 1, 0, 1, 0, 1]] * 6 + [H_ATOM] * 6,  # benzene: aromatic sp2 C
]


def make_table(molecules: list[Molecule]) -> QM9Table:
    n_atoms = np.array([len(m[0]) for m in molecules])
    return QM9Table(
        index=np.arange(1, len(molecules) + 1),
        targets=np.zeros((len(molecules), 11)),
        n_atoms=n_atoms,
        offsets=np.concatenate([[0], np.cumsum(n_atoms)]),
        elements=np.concatenate([np.array(m[0], dtype=np.int8) for m in molecules]),
        coords=np.concatenate([np.array(m[1], dtype=np.float32) for m in molecules]),
    )


def packed(molecules: list[Molecule]) -> torch.Tensor:
    table = make_table(molecules)
    rows = np.arange(len(molecules))
    return pack(table, rows, atom_features(table, rows))


# -- graphs and features by hand ------------------------------------------------------------------


def test_atom_features_by_hand() -> None:
    table = make_table(MOLECULES)
    feats = atom_features(table, np.arange(len(MOLECULES)))
    expected = np.concatenate([np.array(e) for e in EXPECTED_FEATURES])
    np.testing.assert_array_equal(feats, expected)
    # Another order of the molecules gives each its own features, in that order.
    again = atom_features(table, np.array([4, 0]))
    np.testing.assert_array_equal(again, np.array(EXPECTED_FEATURES[4] + EXPECTED_FEATURES[0]))


def test_edges_of_a_three_atom_molecule_by_hand() -> None:
    x = torch.zeros(1, 29, CHANNELS)
    x[0, 0, 3] = x[0, 1, 0] = x[0, 2, 0] = 1.0  # O, H, H
    x[0, :3, 11:] = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    graphs = MoleculeGraphs()(x)
    assert graphs.nodes.shape == (1, 3, 11)  # cut to the largest molecule
    assert graphs.node_mask.tolist() == [[True, True, True]]
    assert graphs.edge_mask[0].tolist() == [[False, True, True], [True, False, True],
                                            [True, True, False]]  # fmt: skip
    r2 = math.sqrt(2.0)
    # edges[v, u] = [bonded, distance] of u → v: O-H 1 Å (bonded: < 1.15 (0.66 + 0.31)), H-H √2.
    expected = [[[0, 0], [1, 1], [1, 1]], [[1, 1], [0, 0], [0, r2]], [[1, 1], [0, r2], [0, 0]]]
    torch.testing.assert_close(graphs.edges[0], torch.tensor(expected))
    near = MoleculeGraphs(cutoff=1.2)(x)
    assert near.edge_mask[0].tolist() == [[False, True, True], [True, False, False],
                                          [True, False, False]]  # fmt: skip
    assert not near.edges[0, 1, 2].any()
    if HAVE_PYG:
        batch = graphs.to_pyg()
        assert batch.edge_index.tolist() == [[1, 2, 0, 2, 0, 1], [0, 0, 1, 1, 2, 2]]
        torch.testing.assert_close(
            batch.edge_attr,
            torch.tensor([[1, 1], [1, 1], [1, 1], [0, r2], [1, 1], [0, r2]]),
        )
        assert batch.batch.tolist() == [0, 0, 0] and int(batch.num_graphs) == 1


def test_bond_tolerance_separates_bonds_from_neighbours() -> None:
    # C-C single bond 1.54 Å is bonded; the 1,3 distance of propane (2.54 Å) is not.
    el = torch.tensor([[1, 1, 1]])
    xyz = torch.tensor([[[0.0, 0, 0], [1.54, 0, 0], [2.05, 1.45, 0]]])
    bonded, dist = qm9_graph_data.bonds(el, xyz)
    assert bonded[0].tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    assert float(dist[0, 0, 2]) == pytest.approx(math.hypot(2.05, 1.45), rel=1e-6)


# -- the MPNN -------------------------------------------------------------------------------------


def _models(implementation: str, dim: int = 16) -> HardParameterSharing:
    torch.manual_seed(0)
    config = MPNNConfig(node_dim=11, edge_dim=2, dim=dim, implementation=implementation)
    return mpnn_hps(11, config, MoleculeGraphs())


def _trunk(model: HardParameterSharing) -> MPNN:
    trunk = cast(nn.Sequential, model.encoder)[1]
    assert isinstance(trunk, MPNN)
    return trunk


IMPLEMENTATIONS = ["dense", pytest.param("pyg", marks=needs_pyg)]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_output_is_invariant_to_atom_order(implementation: str) -> None:
    model = _models(implementation)
    x = packed([BENZENE, FORMALDEHYDE])
    perm = torch.tensor([7, 0, 11, 3, 5, 9, 1, 2, 10, 4, 6, 8])  # benzene's atoms shuffled
    shuffled = x.clone()
    shuffled[0, :12] = x[0, perm]
    shuffled[1, :4] = x[1, torch.tensor([2, 0, 3, 1])]
    with torch.no_grad():
        a, b = model(x), model(shuffled)
    for out_a, out_b in zip(a, b, strict=True):
        torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)
    # ... but not to swapping a molecule's coordinates between atoms of different elements.
    swapped = x.clone()
    swapped[1, [0, 1], 11:] = x[1, [1, 0], 11:]
    with torch.no_grad():
        assert not torch.allclose(model(swapped)[0][1], a[0][1])


@needs_pyg
def test_dense_equals_pyg_for_the_same_seed() -> None:
    dense, pyg = _models("dense", dim=64), _models("pyg", dim=64)
    trunk = _trunk(pyg)
    assert type(trunk.conv).__name__ == "NNConv"
    assert type(trunk.set2set).__name__ == "Set2Set"
    dense_state, pyg_state = dense.state_dict(), pyg.state_dict()
    assert list(dense_state) == list(pyg_state)
    assert all(torch.equal(dense_state[k], pyg_state[k]) for k in dense_state)
    x = packed(MOLECULES)
    out_dense, out_pyg = dense(x), pyg(x)
    for a, b in zip(out_dense, out_pyg, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    sum(o.sum() for o in out_dense).backward()
    sum(o.sum() for o in out_pyg).backward()
    for (name, p), q in zip(dense.named_parameters(), pyg.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    # The pyg implementation also takes a PyG batch built by PyG itself.
    data = importlib.import_module("torch_geometric.data")
    graphs = MoleculeGraphs()(x[:2])
    items = []
    for g in range(2):
        one = PaddedGraphs(*(t[g : g + 1] for t in graphs)).to_pyg()
        items.append(data.Data(x=one.x, edge_index=one.edge_index, edge_attr=one.edge_attr))
    torch.testing.assert_close(
        trunk(data.Batch.from_data_list(items)), trunk(graphs), rtol=1e-5, atol=1e-6
    )


def test_published_sizes_and_parameter_split() -> None:
    model = mpnn_hps(11, MPNNConfig(edge_dim=5))  # Nash-MTL's Net(n_tasks=11, dim=64)
    # lin0 11·64+64, edge net 5·128+128 + 128·4096+4096, root 64·64 + bias 64, GRU 2·3·(64·64+64),
    # Set2Set LSTM 4·64·128 + 4·64·64 + 2·4·64, lin1 128·64+64, heads 11·65.
    expected = 768 + 768 + 528384 + 4160 + 24960 + 49664 + 8256
    assert sum(p.numel() for p in model.shared_parameters()) == expected
    assert sum(p.numel() for p in model.task_parameters()) == 11 * 65
    assert len(model.heads) == 11


def test_mpnn_config_errors() -> None:
    with pytest.raises(ConfigError, match="valid choices: dense, pyg"):
        MPNNConfig(implementation="sparse")
    with pytest.raises(ConfigError, match="dim must be an integer >= 1"):
        MPNNConfig(dim=0)
    with pytest.raises(TypeError, match="PaddedGraphs"):
        MPNN()(object())


def test_pyg_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    # No module of mtl_backends imports torch_geometric when it is imported.
    for path in (ROOT / "mtl_backends").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.startswith("torch_geometric") for n in names), path
    # Without it, the dense model runs and the pyg one names the extra.
    for name in [m for m in sys.modules if m.startswith("torch_geometric")] + ["torch_geometric"]:
        monkeypatch.setitem(sys.modules, name, None)
    model = _models("dense")
    assert len(model(packed([WATER]))) == 11
    with pytest.raises(ImportError, match=r'pip install -e "\.\[graph\]"'):
        _models("pyg")
    with pytest.raises(ImportError, match="graph extra"):
        mpnn.import_pyg("torch_geometric.nn")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[graph\]"'):
        QM9Graph(subset=200, implementation="pyg")


# -- the benchmark on the real data ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"subset": 200, "atoms": 5}, r"unknown argument\(s\) 'atoms'; valid arguments: seed"),
        ({"subset": 0}, r"subset must be null .* or between 10 and 130,831, got 0"),
        ({"subset": 200_000}, r"between 10 and 130,831, got 200000"),
        ({"subset": 200, "cutoff": -1.0}, r"cutoff must be a distance > 0"),
        ({"subset": 200, "implementation": "sparse"}, r"valid choices: dense, pyg"),
        ({"subset": 200, "dim": 0}, r"MPNN dim must be an integer >= 1, got 0"),
        ({"subset": "200"}, r"argument 'subset' must be"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_benchmark("qm9_graph", **kwargs)


@needs_qm9pack
def test_split_sizes_out_of_range_are_config_errors(cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"qm9_graph: subset 20 leaves 0 training molecules"):
        QM9Graph(subset=20, n_val=10, n_test=10, cache_dir=str(cache_dir))
    with pytest.raises(ConfigError, match=r"n_val must lie in 1\.\.10000, got .*13083.*n_val"):
        QM9Graph(subset=130_831, cache_dir=str(cache_dir))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("qm9-graph-cache")
    if HAVE_QM9PACK:
        # The parsed table is keyed by the data files: a copy from the user's cache is the same
        # table, and saves parsing the CSVs again (the feature cache is always built here).
        name = f"table-{table_key(qm9_data_dir())}.npz"
        if (default_cache_dir() / name).is_file():
            shutil.copy(default_cache_dir() / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def bench(cache_dir: Path) -> QM9Graph:
    if not HAVE_QM9PACK:
        pytest.skip('qm9pack is not installed (pip install -e ".[qm9]")')
    return QM9Graph(subset=200, dim=8, cache_dir=str(cache_dir))  # a narrow MPNN: fast steps


def _trainer(
    bench: QM9Graph, weighting: str, balancer: str, steps: int = 4, batch_size: int = 32
) -> MTLTrainer:
    # 160 training molecules at batch 32: 5 steps per epoch; IGBv1 weighs from step 2 on.
    window = (0, min(2, steps - 1))
    config = TrainConfig(steps=steps, batch_size=batch_size, base_window=window, eval_batch_size=64)
    return MTLTrainer(bench, make_weighting(weighting), make_balancer(balancer), config, seed=3)


@needs_qm9pack
def test_builds_with_the_published_protocol_and_caches(bench: QM9Graph, cache_dir: Path) -> None:
    assert not bench.cache_hit
    assert bench.split("train").inputs.shape == (160, 29, CHANNELS)
    assert bench.split("test").targets.shape == (20, 11)
    assert [m.name for m in bench.metric_specs] == [f"{t.name}_mae" for t in TARGETS]
    assert not any(m.higher_is_better for m in bench.metric_specs)
    assert set(PUBLISHED_STL) == {m.name for m in bench.metric_specs}
    assert bench.published_reference()["test"]["u0_mae"] == 58.838
    y = bench.split("train").targets
    np.testing.assert_allclose(y.mean(0).numpy(), 0.0, atol=1e-5)
    # Every hydrogen of the subset has one bond, no atom more than four.
    x = bench.split("train").inputs
    present = x[..., :5].sum(-1) > 0
    el = torch.where(present, x[..., :5].argmax(-1), torch.full(present.shape, -1))
    bonded, _ = qm9_graph_data.bonds(el, x[..., 11:])
    degree = bonded.sum(-1)
    assert bool((degree[el == 0] == 1).all()) and int(degree.max()) <= 4
    again = QM9Graph(subset=200, dim=64, cache_dir=str(cache_dir))  # the width is the model's
    assert again.cache_hit and torch.equal(again.split("val").inputs, bench.split("val").inputs)
    assert not any(p.name.endswith(".tmp") for p in cache_dir.iterdir())


@needs_qm9pack
def test_metrics_are_mae_in_the_usual_units(bench: QM9Graph) -> None:
    targets = bench.split("test").targets
    shifted = [targets[:, t : t + 1] + 1.0 for t in range(11)]  # one training std off
    metrics = bench.metrics(shifted, targets)
    for t, target in enumerate(TARGETS):
        expected = float(bench.target_std[t]) * target.metric_factor
        assert metrics[f"{target.name}_mae"] == pytest.approx(expected, rel=1e-5)


@needs_qm9pack
@pytest.mark.parametrize(("weighting", "balancer"), [("ew", "sum"), ("igbv1", "sum"),
                                                     ("si", "db_mtl")])  # fmt: skip
def test_trains_with_weightings_and_a_balancer(
    bench: QM9Graph, weighting: str, balancer: str
) -> None:
    # DB-MTL: 11 per-task gradients (batched, through the GRU and LSTM) per step; fewer, smaller.
    steps, batch = (3, 32) if balancer == "sum" else (2, 16)
    trainer = _trainer(bench, weighting, balancer, steps=steps, batch_size=batch)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.fit()
    assert len(history.losses) == steps
    assert all(math.isfinite(v) for row in history.losses for v in row)
    assert all(
        not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True)
    )
    result = trainer.evaluate("test")
    assert all(math.isfinite(result.metrics[m.name]) for m in bench.metric_specs)


@needs_qm9pack
def test_same_seed_same_losses_and_resume_mid_epoch(bench: QM9Graph) -> None:
    full = _trainer(bench, "igbv1", "sum", steps=6)
    full_losses = [full.step().losses for _ in range(6)]  # 5 steps per epoch: crosses one
    again = _trainer(bench, "igbv1", "sum", steps=6)
    assert all(torch.equal(again.step().losses, full_losses[k]) for k in range(3))
    state = again.state_dict()  # mid-epoch, after the base window
    resumed = _trainer(bench, "igbv1", "sum", steps=6)
    resumed.load_state_dict(state)
    for k in range(3, 6):
        result = resumed.step()
        assert torch.equal(result.losses, full_losses[k]), k
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
