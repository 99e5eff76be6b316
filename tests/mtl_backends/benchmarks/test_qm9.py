from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtl_backends.benchmarks import make_benchmark, qm9_data, qm9_descriptors
from mtl_backends.benchmarks.qm9 import QM9
from mtl_backends.benchmarks.qm9_data import (
    HAR2EV,
    TARGETS,
    MissingExtraError,
    QM9Table,
    load_table,
    qm9_data_dir,
    read_table,
    split_indices,
    table_key,
)
from mtl_backends.benchmarks.qm9_descriptors import feature_key, featurize
from tests.mtl_backends.benchmarks.helpers import train_briefly

HAVE_QM9PACK = importlib.util.find_spec("qm9pack") is not None
needs_qm9pack = pytest.mark.skipif(
    not HAVE_QM9PACK, reason='qm9pack is not installed (pip install -e ".[qm9]")'
)

# Two molecules as they appear in qm9pack's qm9_part1.csv (rows 1 and 3: CH4 and H2O); only the
# columns the loader reads.
FAKE_ROWS: list[dict[str, str]] = [
    {
        "Index": "1",
        "N_atoms": "5",
        "Elements": "['C','H','H','H','H']",
        "XYZ_Ang": "[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,"
        "0.0019761204],[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,"
        "-0.8766437152],[-0.5238136345,1.4379326443,0.9063972942]]",
        "Dipole_debye": "0.",
        "Polarizability_bohr3": "13.21",
        "HOMO_au": "-0.3877",
        "LUMO_au": "0.1171",
        "R2_bohr2": "35.3641",
        "ZPVE_au": "0.044749",
        "InternalEnergy_0K_au": "-40.47893",
        "InternalEnergy_298K_au": "-40.476062",
        "Enthalphy_298K_au": "-40.475117",
        "GibbsFreeEnergy_298K_au": "-40.498597",
        "Heatcapacity_Cv_cal_mol_K": "6.469",
    },
    {
        "Index": "3",
        "N_atoms": "3",
        "Elements": "['O','H','H']",
        "XYZ_Ang": "[[-0.0343604951,0.9775395708,0.0076015923],[0.0647664923,0.0205721989,"
        "0.0015346341],[0.8717903737,1.3007924048,0.0006931336]]",
        "Dipole_debye": "1.8511",
        "Polarizability_bohr3": "6.31",
        "HOMO_au": "-0.2928",
        "LUMO_au": "0.0687",
        "R2_bohr2": "19.0002",
        "ZPVE_au": "0.021375",
        "InternalEnergy_0K_au": "-76.404702",
        "InternalEnergy_298K_au": "-76.401867",
        "Enthalphy_298K_au": "-76.400922",
        "GibbsFreeEnergy_298K_au": "-76.422349",
        "Heatcapacity_Cv_cal_mol_K": "6.002",
    },
]

# Hand-computed from the rows above (Hartree × 27.211386246; atomisation energies subtract the
# free-atom energies, e.g. CH4 U0: -40.47893 - (-37.846772 + 4 · -0.500273) = -0.631066 Ha).
CH4 = [0.0, 13.21, -10.549854, 3.186453, 35.3641, 1.217682, -17.172181, -17.286822, -17.389654,
       -16.151917, 6.469]  # fmt: skip
H2O = [1.8511, 6.31, -7.967494, 1.869422, 19.0002, 0.581643, -9.240361, -9.278838, -9.330213,
       -8.733848, 6.002]  # fmt: skip


def write_fake_tree(folder: Path, rows: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = list(rows[0])
    for k, name in enumerate(qm9_data.DATA_FILES):
        with (folder / name).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, header, quoting=csv.QUOTE_MINIMAL)
            writer.writeheader()
            if k == 0:
                writer.writerows(rows)
    return folder


# -- without qm9pack ------------------------------------------------------------------------------


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qm9_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[qm9\]"'):
        qm9_data_dir()
    with pytest.raises(ImportError, match="qm9pack"):
        make_benchmark("qm9", subset=500)


def test_missing_data_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"qm9_part1\.csv"):
        table_key(tmp_path)


def test_unit_conversion_on_known_molecules(tmp_path: Path) -> None:
    table = read_table(write_fake_tree(tmp_path / "data", FAKE_ROWS))
    assert table.index.tolist() == [1, 3]
    assert table.n_atoms.tolist() == [5, 3]
    assert table.elements.tolist() == [1, 0, 0, 0, 0, 3, 0, 0]
    np.testing.assert_allclose(table.targets[0], CH4, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table.targets[1], H2O, rtol=1e-6, atol=1e-6)
    assert table.targets[0, 2] == pytest.approx(-0.3877 * HAR2EV)
    assert [t.name for t in TARGETS] == [
        "mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv",
    ]  # fmt: skip


def test_table_cache_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_fake_tree(tmp_path / "data", FAKE_ROWS)
    cache = tmp_path / "cache"
    first = load_table(data, cache)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("table-") and files[0].endswith(".npz")

    def boom(_: Path) -> QM9Table:
        raise AssertionError("the CSV was read again")

    monkeypatch.setattr(qm9_data, "read_table", boom)
    again = load_table(data, cache)  # a hit: no parsing
    np.testing.assert_array_equal(first.targets, again.targets)
    np.testing.assert_array_equal(first.coords, again.coords)
    key = table_key(data)
    (data / "qm9_part1.csv").write_text((data / "qm9_part1.csv").read_text() + "\n")
    assert table_key(data) != key  # edited inputs invalidate
    monkeypatch.setattr(qm9_data, "TABLE_VERSION", 99)
    assert table_key(data) != key


def test_featurize_by_hand(tmp_path: Path) -> None:
    table = read_table(write_fake_tree(tmp_path / "data", FAKE_ROWS))
    feats = featurize(table, np.array([1, 0]))
    assert feats.shape == (2, 274)
    water = feats[0]
    # Coulomb matrix of H2O: O-H distances give the off-diagonals.
    xyz = table.coords[5:8].astype(np.float64)
    z = np.array([8.0, 1.0, 1.0])
    dist = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    cm = np.where(np.eye(3, dtype=bool), 0.5 * z**2.4, np.outer(z, z) / (dist + np.eye(3)))
    eig = np.linalg.eigvalsh(cm)
    np.testing.assert_allclose(water[:3], eig[np.argsort(-np.abs(eig))], rtol=1e-5)
    assert not water[3:29].any()
    assert water[29:34].tolist() == [2, 0, 0, 1, 0]
    assert feats[1, 29:34].tolist() == [4, 1, 0, 0, 0]
    # Three atom pairs in water, each Gaussian histogram row peaks at most at 1 per pair.
    rbf = water[34:].reshape(15, 16)
    assert rbf.sum() == pytest.approx(
        np.exp(
            -((dist[np.triu_indices(3, 1)][:, None] - qm9_descriptors.RBF_CENTERS) ** 2) / 0.125
        ).sum(),
        rel=1e-5,
    )
    assert featurize(table, np.array([0]), rbf=False).shape == (1, 34)


def test_split_is_seeded_nested_and_disjoint() -> None:
    a = split_indices(130831, seed=0, subset=500)
    b = split_indices(130831, seed=0, subset=500)
    c = split_indices(130831, seed=1, subset=500)
    full = split_indices(130831, seed=0)
    assert {k: len(v) for k, v in a.items()} == {"train": 400, "val": 50, "test": 50}
    assert {k: len(v) for k, v in full.items()} == {"train": 110831, "val": 10000, "test": 10000}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k])
        assert set(a[k]) <= set(full[k])  # a subset's splits lie inside the full protocol's
    all_rows = np.concatenate(list(full.values()))
    assert len(np.unique(all_rows)) == 130831
    with pytest.raises(ValueError, match="training molecules"):
        split_indices(130831, seed=0, subset=20, n_val=10, n_test=10)
    with pytest.raises(ValueError, match=r"1\.\.10000"):
        split_indices(130831, seed=0, n_test=20000)


def test_feature_key_changes_with_everything() -> None:
    rows = np.arange(10)
    key = feature_key("t", rows, True)
    assert key == feature_key("t", rows.copy(), True)
    assert key != feature_key("t", rows[::-1], True)
    assert key != feature_key("t", rows, False)
    assert key != feature_key("u", rows, True)


# -- with qm9pack ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qm9-cache")


@pytest.fixture(scope="module")
def bench(cache_dir: Path) -> QM9:
    if not HAVE_QM9PACK:
        pytest.skip('qm9pack is not installed (pip install -e ".[qm9]")')
    return QM9(subset=500, cache_dir=str(cache_dir))


@needs_qm9pack
def test_builds_trains_and_evaluates(bench: QM9) -> None:
    assert not bench.cache_hit
    _, result = train_briefly(bench, steps=4, batch_size=32)
    assert bench.n_tasks == 11
    assert all(not m.higher_is_better for m in bench.metric_specs)
    assert list(result.metrics) == [f"{t.name}_mae" for t in TARGETS]
    assert bench.split("train").inputs.shape == (400, 274)
    assert bench.split("test").targets.shape == (50, 11)
    train_briefly(bench, steps=2, batch_size=32, jacobian=True)


@needs_qm9pack
def test_real_data_matches_published_statistics(bench: QM9, cache_dir: Path) -> None:
    table = load_table(qm9_data_dir(), cache_dir)
    assert len(table) == 130831
    np.testing.assert_allclose(table.targets[0], CH4, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table.targets[2], H2O, rtol=1e-6, atol=1e-6)
    # PyG's QM9 statistics (data.md §2.7).
    expected = {"mu": (2.673, 1.503), "alpha": (75.28, 8.17), "homo": (-6.536, 0.598),
                "lumo": (0.322, 1.275), "r2": (1189.0, 280.0), "zpve": (4.057, 0.902),
                "u0": (-76.12, 10.32), "g": (-70.84, 9.50), "cv": (31.62, 4.07)}  # fmt: skip
    names = [t.name for t in TARGETS]
    for name, (mean, std) in expected.items():
        k = names.index(name)
        assert table.targets[:, k].mean() == pytest.approx(mean, rel=2e-3)
        assert table.targets[:, k].std() == pytest.approx(std, rel=2e-3)


@needs_qm9pack
def test_targets_standardised_with_train_statistics(bench: QM9, cache_dir: Path) -> None:
    table = load_table(qm9_data_dir(), cache_dir)
    train_y = table.targets[bench.rows["train"]]
    np.testing.assert_allclose(bench.target_mean.numpy(), train_y.mean(0))
    np.testing.assert_allclose(bench.target_std.numpy(), train_y.std(0))
    y = bench.split("train").targets
    np.testing.assert_allclose(y.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(0, unbiased=False).numpy(), 1.0, atol=1e-4)
    np.testing.assert_allclose(
        bench.original_targets("test").numpy(),
        table.targets[bench.rows["test"]],
        rtol=1e-5,
        atol=1e-4,
    )
    x = bench.split("train").inputs
    assert float(x.mean(0).abs().max()) < 1e-4


@needs_qm9pack
def test_metrics_are_mae_in_original_units(bench: QM9) -> None:
    targets = bench.split("test").targets
    perfect = [targets[:, t : t + 1].clone() for t in range(11)]
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in bench.metrics(perfect, targets).values())
    shifted = [p + 1.0 for p in perfect]  # one training std too high on every target
    metrics = bench.metrics(shifted, targets)
    for t, target in enumerate(TARGETS):
        assert metrics[f"{target.name}_mae"] == pytest.approx(
            float(bench.target_std[t]) * target.metric_factor, rel=1e-5
        )
    assert metrics["u0_mae"] == pytest.approx(1000 * float(bench.target_std[6]), rel=1e-5)


@needs_qm9pack
def test_feature_cache_hit_and_invalidation(
    bench: QM9, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_featurize = qm9_descriptors.featurize
    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(1)
        return real_featurize(*args, **kwargs)

    monkeypatch.setattr(qm9_descriptors, "featurize", counting)
    again = QM9(subset=500, cache_dir=str(cache_dir))
    assert again.cache_hit and not calls
    for split in ("train", "val", "test"):
        assert torch.equal(again.split(split).inputs, bench.split(split).inputs)
    assert not any(p.name.endswith(".tmp") for p in cache_dir.iterdir())  # atomic writes
    other_seed = QM9(subset=500, seed=1, cache_dir=str(cache_dir))
    assert not other_seed.cache_hit and len(calls) == 1
    no_rbf = QM9(subset=500, rbf=False, cache_dir=str(cache_dir))
    assert not no_rbf.cache_hit and no_rbf.split("train").inputs.shape == (400, 34)
    monkeypatch.setattr(qm9_descriptors, "FEATURE_VERSION", qm9_descriptors.FEATURE_VERSION + 1)
    bumped = QM9(subset=500, cache_dir=str(cache_dir))
    assert not bumped.cache_hit and len(calls) == 3
    torch.testing.assert_close(bumped.split("test").inputs, bench.split("test").inputs)
