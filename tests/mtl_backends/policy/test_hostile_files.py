"""Policy folders need not be trusted: crafted or damaged files are refused, naming the file.

Every case here was a traceback, a silent acceptance or (for a pickled payload) torch's advice to
retry with ``weights_only=False`` before issue 18.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from mtl_backends.fileio import FileFormatError
from mtl_backends.policy import load_policy
from tests.mtl_backends.policy._policies import random_policy


class _Payload:
    """Unpickling this object creates ``marker``: code from the file would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return random_policy(tmp_path / "good")


def _copy(policy: Path, dest: Path) -> Path:
    shutil.copytree(policy, dest)
    return dest


def test_the_payload_is_live_when_unpickled_plainly(tmp_path: Path) -> None:
    """The control: the payload of the tests below does run code when loaded without care."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(marker)))  # our own payload, on purpose
    assert marker.exists()


@pytest.mark.parametrize("container", ["raw_pickle", "torch_zip"])
def test_a_pickled_payload_in_policy_pt_runs_no_code(
    policy: Path, tmp_path: Path, container: str
) -> None:
    marker = tmp_path / "pwned"
    bad = _copy(policy, tmp_path / "bad")
    if container == "raw_pickle":
        (bad / "policy.pt").write_bytes(pickle.dumps({"layers.0.weight": _Payload(marker)}))
    else:
        torch.save({"layers.0.weight": _Payload(marker)}, bad / "policy.pt")
    with pytest.raises(FileFormatError) as err:
        load_policy(bad)
    message = str(err.value)
    assert not marker.exists()
    assert message.startswith(f"policy weights {str(bad / 'policy.pt')!r} are not a tensors-only")
    # torch's own message would advise weights_only=False, which would run the payload.
    assert "never load this file with weights_only=False" in message
    assert "two options" not in message and "\n" not in message


@pytest.mark.parametrize("cut", [0, 40, 200, -20])
def test_an_empty_or_truncated_policy_pt_names_the_file(
    policy: Path, tmp_path: Path, cut: int
) -> None:
    bad = _copy(policy, tmp_path / "bad")
    (bad / "policy.pt").write_bytes((policy / "policy.pt").read_bytes()[:cut])
    pattern = "are not a (readable torch tensor|tensors-only torch) file"
    with pytest.raises(FileFormatError, match=pattern) as err:
        load_policy(bad)
    assert str(err.value).startswith(f"policy weights {str(bad / 'policy.pt')!r}")
    assert "export the policy again" in str(err.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"format": "igb-policy", ', r"is not valid JSON \(.* at line 1"),
        ("[1, 2, 3]", "must hold a JSON object, got a array"),
        ("null", "must hold a JSON object, got a null"),
    ],
)
def test_a_sidecar_that_is_not_a_json_object_names_the_file(
    policy: Path, tmp_path: Path, text: str, match: str
) -> None:
    bad = _copy(policy, tmp_path / "bad")
    (bad / "policy.json").write_text(text)
    with pytest.raises(FileFormatError, match=match) as err:
        load_policy(bad)
    assert str(err.value).startswith(f"policy sidecar {str(bad / 'policy.json')!r}")


def _retensor(policy: Path, dest: Path, change: dict[str, torch.Tensor | None]) -> Path:
    bad = _copy(policy, dest)
    tensors = torch.load(policy / "policy.pt", weights_only=True)
    for name, value in change.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    torch.save(tensors, bad / "policy.pt")
    return bad


def test_tensors_are_checked_by_name_shape_dtype_and_value(policy: Path, tmp_path: Path) -> None:
    weight = torch.load(policy / "policy.pt", weights_only=True)["layers.0.weight"]
    cases: dict[str, tuple[dict[str, torch.Tensor | None], str]] = {
        "extra": ({"layers.9.weight": torch.zeros(2)}, r"Unexpected key\(s\) layers\.9\.weight"),
        "missing": ({"layers.1.bias": None}, r"Missing key\(s\) layers\.1\.bias"),
        "shape": (
            {"layers.0.weight": weight[:, :-1].clone()},
            rf"size mismatch for layers\.0\.weight: shape \(16, {weight.shape[1] - 1}\), "
            rf"expected \(16, {weight.shape[1]}\)",
        ),
        "dtype": (
            {"layers.0.weight": weight.double()},
            r"dtype mismatch for layers\.0\.weight: torch\.float64, expected torch\.float32",
        ),
        "nan": (
            {"layers.0.weight": torch.full_like(weight, float("nan"))},
            r"tensor\(s\) layers\.0\.weight hold NaN or infinite values",
        ),
    }
    for name, (change, match) in cases.items():
        bad = _retensor(policy, tmp_path / name, change)
        with pytest.raises(FileFormatError, match=match) as err:
            load_policy(bad)
        assert str(err.value).startswith(str(bad / "policy.pt")), name


def test_normalisation_tensors_are_checked(tmp_path: Path) -> None:
    import numpy as np

    from mtl_backends.features import FeatureTable
    from tests.mtl_backends.policy._policies import SPEC, T

    dim = FeatureTable(SPEC).dim(T)
    good = random_policy(tmp_path / "norm")
    tensors = torch.load(good / "policy.pt", weights_only=True)
    tensors["obs_mean"] = torch.zeros(dim, dtype=torch.float64)
    tensors["obs_var"] = torch.ones(dim, dtype=torch.float64)
    side = json.loads((good / "policy.json").read_text())
    side["obs_normalization"] = {"clip_obs": 10.0, "epsilon": 1e-8}
    (good / "policy.json").write_text(json.dumps(side))
    torch.save(tensors, good / "policy.pt")
    assert load_policy(good).obs_mean is not None  # the well-formed folder loads
    for name, value, match in (
        ("obs_var", -torch.ones(dim, dtype=torch.float64), "obs_var has negative entries"),
        ("obs_mean", torch.full((dim,), np.nan, dtype=torch.float64), "obs_mean holds NaN"),
        ("obs_mean", torch.zeros(dim + 1, dtype=torch.float64), "obs_mean has shape"),
        ("obs_var", torch.ones(dim), re.escape("obs_var has dtype torch.float32")),
    ):
        bad = _retensor(
            good, tmp_path / f"bad-{name}-{value.shape[0]}-{value.dtype}", {name: value}
        )
        with pytest.raises(FileFormatError, match=match):
            load_policy(bad)
