"""Measure the cost of the behaviour models at their default sizes and print it as JSON.

Measured (synthetic data: 17-D observations, 6-D actions, like MuJoCo HalfCheetah/Walker2d):
- fit time per 1000 gradient steps at batch 256 (diffusion, gaussian, CEP energy);
- sampling time for one action per state for ``--states`` states (15 DPM-Solver steps, with and
  without energy guidance), also given per 100k states by linear scaling (stated in the output).

Usage: ``python benchmarks/behavior_models.py [--threads 2] [--fit-steps 1000] [--states 10000]``.
Only the timings matter here, not the quality of the fits: the data are random.
"""

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from sb3_dare.dare import DiffusionBehaviorModel, make_behavior_model, train_energy_cep

OBSERVATION_DIM = 17
ACTION_DIM = 6
N_TRANSITIONS = 100_000
WARMUP_STEPS = 20
N_SUPPORT_ACTIONS = 16


def synthetic_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((N_TRANSITIONS, OBSERVATION_DIM)).astype(np.float32)
    weights = rng.standard_normal((OBSERVATION_DIM, ACTION_DIM)) / np.sqrt(OBSERVATION_DIM)
    actions = np.tanh(observations @ weights + 0.3 * rng.standard_normal((N_TRANSITIONS, ACTION_DIM)))
    return observations, actions.astype(np.float32)


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def seconds_per_1000_steps(run_steps: Callable[[int], object], n_steps: int, time_cap: float) -> dict[str, float]:
    """Run blocks of 100 steps until ``n_steps`` or ``time_cap`` seconds; report the measured rate."""
    run_steps(WARMUP_STEPS)
    done, elapsed = 0, 0.0
    while done < n_steps and elapsed < time_cap:
        block = min(100, n_steps - done)
        start = time.perf_counter()
        run_steps(block)
        elapsed += time.perf_counter() - start
        done += block
    return {"seconds_per_1000_steps": round(1000 * elapsed / done, 3), "steps_measured": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--fit-steps", type=int, default=1000, help="gradient steps timed per model")
    parser.add_argument("--states", type=int, default=10_000, help="states sampled (one action each)")
    parser.add_argument("--time-cap", type=float, default=40.0, help="stop timing a fit after this many seconds")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    observations, actions = synthetic_data()
    states = observations[: args.states]
    scale = 100_000 / args.states
    conditions: dict[str, object] = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "observation_dim": OBSERVATION_DIM,
        "action_dim": ACTION_DIM,
        "batch_size": 256,
        "solver_steps": 15,
        "sampling_per_100k_states": f"measured on {args.states} states and scaled linearly by {scale:g}",
    }
    results: dict[str, object] = {"conditions": conditions}

    # Diffusion model, default sizes (noise network 3x256, energy network 3x256).
    diffusion = make_behavior_model("diffusion", OBSERVATION_DIM, ACTION_DIM)
    assert isinstance(diffusion, DiffusionBehaviorModel)
    results["diffusion_fit"] = seconds_per_1000_steps(
        lambda steps: diffusion.fit(observations, actions, n_steps=steps, seed=0), args.fit_steps, args.time_cap
    )
    unguided = timed(lambda: diffusion.sample(states, generator=torch.Generator().manual_seed(0)))
    diffusion_sample = {"unguided_seconds": round(unguided, 3), "unguided_seconds_per_100k": round(unguided * scale, 2)}
    results["diffusion_sample"] = diffusion_sample

    # CEP energy: a critic like IQL's (2x256 MLP on [s, a]); support actions and their Q-values are
    # sampled once (timed separately), then the CEP steps are timed on the cached supports.
    critic = torch.nn.Sequential(
        torch.nn.Linear(OBSERVATION_DIM + ACTION_DIM, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 1),
    )

    def q_fn(batch_observations: torch.Tensor, batch_actions: torch.Tensor) -> torch.Tensor:
        return critic(torch.cat([batch_observations, batch_actions], dim=-1)).squeeze(-1)

    support_states = torch.as_tensor(observations[:2000])
    support_seconds = timed(
        lambda: diffusion.fit_energy(support_states, q_fn, n_steps=1, n_support_actions=N_SUPPORT_ACTIONS, seed=0)
    )
    support_actions = diffusion.sample(support_states, N_SUPPORT_ACTIONS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        support_q = q_fn(support_states.repeat_interleave(N_SUPPORT_ACTIONS, 0), support_actions.reshape(-1, ACTION_DIM))
    normalized = diffusion.normalize(support_states)
    cep = seconds_per_1000_steps(
        lambda steps: train_energy_cep(
            diffusion.energy,
            normalized,
            support_actions,
            support_q.view(-1, N_SUPPORT_ACTIONS),
            diffusion.schedule.marginal,
            n_steps=steps,
        ),
        args.fit_steps,
        args.time_cap,
    )
    results["energy_fit"] = {
        **cep,
        "n_support_actions": N_SUPPORT_ACTIONS,
        "support_sampling_and_q_seconds_for_2000_states": round(support_seconds, 3),
        "support_sampling_and_q_seconds_per_100k_states": round(support_seconds * 50, 2),
    }
    guided = timed(lambda: diffusion.sample(states, generator=torch.Generator().manual_seed(0), guidance_scale=3.0))
    diffusion_sample.update({"guided_seconds": round(guided, 3), "guided_seconds_per_100k": round(guided * scale, 2)})

    # Gaussian model, default sizes (2x256).
    gaussian = make_behavior_model("gaussian", OBSERVATION_DIM, ACTION_DIM)
    results["gaussian_fit"] = seconds_per_1000_steps(
        lambda steps: gaussian.fit(observations, actions, n_steps=steps, seed=0), args.fit_steps, args.time_cap
    )
    sampled = timed(lambda: gaussian.sample(states, generator=torch.Generator().manual_seed(0)))
    results["gaussian_sample"] = {"seconds": round(sampled, 4), "seconds_per_100k": round(sampled * scale, 3)}

    conditions["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
