"""On a CUDA device: every algorithm learns both phases, checkpoints and resumes, saves, and loads on the device and on
the CPU with the same actions. Skipped where no GPU is present (CI); run on one with ``pytest tests/test_device.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th

from sb3_dare import DARE_IQL, IQL, CalQL, DARE_CalQL
from sb3_dare.common.checkpoint import O2OCheckpointCallback, resume

pytestmark = pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA device")

ENV_ID = "InvertedPendulum-v5"
TINY = dict(
    batch_size=64,
    policy_kwargs=dict(net_arch=[32, 32]),
    offline_steps=200,
    offline_eval_freq=100,
    offline_eval_episodes=1,
    buffer_size=1000,
    seed=0,
    device="cuda",
)
TINY_DARE = dict(
    behavior_steps=50,
    energy_steps=20,
    behavior_batch_size=64,
    behavior_kwargs=dict(hidden_sizes=[32, 32]),
    max_support_states=500,
)
CASES = [
    (IQL, {}),
    (IQL, dict(torch_compile=True)),
    (CalQL, dict(cql_n_actions=4)),
    (DARE_IQL, dict(TINY_DARE, guidance_scale=2.0)),
    (DARE_IQL, dict(TINY_DARE, guidance_scale=2.0, score_mode="per_batch", score_ema=0.9)),
    (DARE_CalQL, dict(TINY_DARE, cql_n_actions=4, behavior_model="gaussian", guidance_scale=0.0)),
]


@pytest.mark.parametrize("algorithm, extra", CASES, ids=lambda case: getattr(case, "__name__", None) or "-".join(sorted(case)))
def test_learn_checkpoint_resume_save_load_on_cuda(pendulum_balance_dataset, tmp_path, algorithm: type, extra: dict[str, Any]):
    model = algorithm("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **TINY, **extra)
    model.learn(300, callback=O2OCheckpointCallback(save_freq=150, save_path=tmp_path / "ck"))
    assert all(parameter.is_cuda for parameter in model.policy.parameters())
    if isinstance(model, DARE_IQL | DARE_CalQL):
        assert all(parameter.is_cuda for parameter in model.behavior.parameters())
        if model.score_mode == "cached":
            assert not np.isnan(model.replay_buffer.offline_scores).any()
    model.save(tmp_path / "model")
    on_gpu = algorithm.load(tmp_path / "model", env=ENV_ID, device="cuda")
    on_cpu = algorithm.load(tmp_path / "model", device="cpu")
    observations = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        on_gpu.predict(observations, deterministic=True)[0], on_cpu.predict(observations, deterministic=True)[0], atol=1e-5
    )
    resumed = resume(tmp_path / "ck", total_timesteps=350, device="cuda")
    assert resumed.num_timesteps == 350 and resumed.offline_updates == 200
