"""The code examples of the README and of the own-loop guide run as written.

Blocks are marked ``<!-- readme-test: NAME -->``. The README shows the policy loop; the guide page
(``docs/site/guide/own-loop.md``) shows it too, with the IGBv1 loop and the ONNX example. A block
that both show must be the same text, so that the two pages cannot drift apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_backends.weightings import PolicyWeighting

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OWN_LOOP = ROOT / "docs" / "site" / "guide" / "own-loop.md"
PATTERN = re.compile(r"<!-- readme-test: ([\w-]+) -->\n```python\n(.*?)```", re.S)


def _page_blocks(page: Path) -> dict[str, str]:
    return {name: code for name, code in PATTERN.findall(page.read_text())}


def _blocks() -> dict[str, str]:
    """Every tested block, by name, from the README and the own-loop guide."""
    return {**_page_blocks(OWN_LOOP), **_page_blocks(README)}


def test_pages_have_the_examples_and_agree() -> None:
    readme, guide = _page_blocks(README), _page_blocks(OWN_LOOP)
    assert set(readme) == {"policy-loop", "make-vec"}
    assert {"igbv1-loop", "policy-loop", "onnx-numpy"} <= set(guide)
    for name in set(readme) & set(guide):
        assert readme[name] == guide[name], f"the {name!r} example differs between the pages"


def test_igbv1_loop_runs_and_switches_to_igbv1_weights() -> None:
    namespace: dict[str, object] = {}
    exec(compile(_blocks()["igbv1-loop"], "README:igbv1-loop", "exec"), namespace)
    weights = namespace["weights"]
    assert isinstance(weights, torch.Tensor)
    assert float(weights.sum()) == pytest.approx(3.0, abs=1e-5)
    assert not torch.equal(weights, torch.ones(3))


def test_policy_loop_runs_with_the_shipped_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # a shipped policy loads by name from any folder
    code = _blocks()["policy-loop"]
    assert "PolicyWeighting()" in code
    namespace: dict[str, object] = {}
    exec(compile(code, "README:policy-loop", "exec"), namespace)
    policy = namespace["policy"]
    assert isinstance(policy, PolicyWeighting) and policy.path.name == "generalist"
    weights = namespace["weights"]
    assert isinstance(weights, torch.Tensor) and weights.shape == (3,)
    assert float(weights.sum()) == pytest.approx(3.0, abs=1e-5)


def test_onnx_numpy_example_gives_the_pytorch_policy_s_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mtl_backends.policy import action_to_weights, load_policy
    from mtl_backends.policy.onnx_export import write_onnx
    from tests.mtl_backends.policy._policies import tracker_with_gaps

    monkeypatch.chdir(tmp_path)
    write_onnx("synthetic-ppo-residual", "policy.onnx")
    namespace: dict[str, object] = {}
    exec(compile(_blocks()["onnx-numpy"], "README:onnx-numpy", "exec"), namespace)
    policy = load_policy("synthetic-ppo-residual")
    obs, gaps = np.asarray(namespace["obs"]), np.asarray(namespace["gaps"])
    action = policy.act(torch.as_tensor(obs))
    assert float(action.abs().max()) > 0.01  # a real action, not the zero (IGBv1) one
    expected = action_to_weights(action, "residual", policy.tau, tracker_with_gaps(gaps.tolist()))
    weights = torch.as_tensor(namespace["weights"], dtype=torch.float32)
    torch.testing.assert_close(weights, expected, atol=1e-5, rtol=0)


def test_make_vec_example_steps_two_async_envs_through_an_episode() -> None:
    namespace: dict[str, object] = {}
    exec(compile(_blocks()["make-vec"], "README:make-vec", "exec"), namespace)
    obs, reward = np.asarray(namespace["obs"]), np.asarray(namespace["reward"])
    assert obs.shape[0] == 2 and reward.shape == (2,) and np.isfinite(reward).all()
    # The smoke preset's episode is 5 decisions: the loop ends exactly at its end.
    assert np.asarray(namespace["terminated"]).all()


def _zoo_example() -> tuple[str, list[str]]:
    """The README's rl-zoo3 hyperparameter file and command (its argv after ``python``)."""
    text = README.read_text()
    hp = re.search(r"<!-- readme-test: zoo-hyperparams -->\n```yaml\n(.*?)```", text, re.S)
    command = re.search(r"```bash\n(python -m rl_zoo3\.train .*?)```", text, re.S)
    assert hp is not None and command is not None, "the README's rl-zoo3 example is missing"
    argv = command.group(1).split("#", 1)[0].replace("\\\n", " ").split()
    return hp.group(1), argv[1:]


@pytest.mark.slow
def test_rl_zoo3_example_trains_and_saves_a_loadable_agent(tmp_path: Path) -> None:
    pytest.importorskip("rl_zoo3")
    from stable_baselines3 import PPO

    from igb_env import IGBEnv

    hyperparams, argv = _zoo_example()
    (tmp_path / "hp.yml").write_text(hyperparams)
    # rl-zoo3 lets SB3 make its default logger folder (SB3-<date>) in the temp folder: keep it here.
    environ = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env=environ,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    model = PPO.load(tmp_path / "logs/ppo/igb_env-IGB-v0_1/igb_env-IGB-v0.zip", device="cpu")
    assert model.num_timesteps >= 40
    env = IGBEnv(config={"preset": "smoke"})
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(env.action_space.dtype))
