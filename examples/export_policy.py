"""
Export a trained policy for deployment: SB3's policy-only save, and a TorchScript module (ONNX too, when the
``onnx`` package is installed) with the observation normaliser and the action rescaling inside, so the exported
file maps raw env observations to env actions on its own.

Run: ``python examples/export_policy.py [--offline-steps N]`` (trains a small IQL on the embedded dataset first).
"""

from __future__ import annotations

import argparse
import os

import gymnasium as gym
import numpy as np
import torch as th
from torch import nn

from sb3_dare import IQL
from sb3_dare.common.policies import O2OPolicy
from sb3_dare.quickstart import EMBEDDED_DATASET


class DeployablePolicy(nn.Module):
    """Raw observation -> env action: normalise, deterministic actor, rescale from [-1, 1] to the env's bounds."""

    def __init__(self, policy: O2OPolicy):
        super().__init__()
        self.policy = policy
        low = th.as_tensor(policy.action_space.low, dtype=th.float32)
        high = th.as_tensor(policy.action_space.high, dtype=th.float32)
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        actions = self.policy._predict(observations, deterministic=True)
        return self.action_low + 0.5 * (actions + 1.0) * (self.action_high - self.action_low)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offline-steps", type=int, default=2000)
    parser.add_argument("--output", default="exported_policy")
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)

    model = IQL(
        "MlpPolicy",
        "Pendulum-v1",
        dataset=EMBEDDED_DATASET,
        offline_steps=args.offline_steps,
        policy_kwargs=dict(net_arch=[64, 64]),
        offline_eval_freq=0,
        seed=0,
    )
    model.learn(0)

    # 1. SB3's policy-only save: the policy class and its weights (the normaliser's statistics are buffers in it)
    model.policy.save(os.path.join(args.output, "policy.pth"))
    restored = type(model.policy).load(os.path.join(args.output, "policy.pth"))

    # 2. TorchScript: one file, no sb3_dare needed to run it
    deployable = DeployablePolicy(model.policy).eval()
    example = th.as_tensor(gym.make("Pendulum-v1").observation_space.sample()[None], dtype=th.float32)
    scripted = th.jit.trace(deployable, example)
    scripted_path = os.path.join(args.output, "policy.torchscript.pt")
    scripted.save(scripted_path)
    loaded = th.jit.load(scripted_path)

    observations = np.random.default_rng(0).uniform(-1, 1, size=(8, 3)).astype(np.float32)
    expected, _ = model.predict(observations, deterministic=True)
    with th.no_grad():
        exported = loaded(th.as_tensor(observations)).numpy()
    np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(restored.predict(observations, deterministic=True)[0], expected, rtol=1e-5, atol=1e-6)
    print(f"policy-only save: {args.output}/policy.pth; TorchScript: {scripted_path} (same actions as model.predict)")

    # 3. ONNX, when the exporter is installed (pip install onnx)
    try:
        import onnx  # noqa: F401
    except ImportError:
        print("ONNX export skipped: pip install onnx")
        return
    onnx_path = os.path.join(args.output, "policy.onnx")
    th.onnx.export(
        deployable,
        (example,),
        onnx_path,
        input_names=["observation"],
        output_names=["action"],
        dynamic_axes={"observation": {0: "batch"}, "action": {0: "batch"}},
    )
    print(f"ONNX: {onnx_path}")


if __name__ == "__main__":
    main()
