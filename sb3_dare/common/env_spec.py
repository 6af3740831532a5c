"""Re-creating a training env from its Gymnasium spec (for offline evaluations and for resuming a checkpoint)."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec
from stable_baselines3.common.vec_env import VecEnv

# wrappers SB3 adds itself (the training env's statistics); an evaluation or a resumed run adds its own
_SB3_WRAPPERS = ("Monitor",)


def env_spec_of(env: gym.Env | VecEnv | None) -> EnvSpec | None:
    """The Gymnasium spec of ``env`` (of its first env for a VecEnv): None where there is none."""
    if env is None:
        return None
    try:
        if isinstance(env, VecEnv):
            return env.get_attr("spec", indices=[0])[0]
        return env.spec
    except Exception:  # a custom env or VecEnv without the attribute: nothing to read
        return None


def env_id_of(env: gym.Env | VecEnv | None) -> str | None:
    """The Gymnasium id of ``env`` (of its first env for a VecEnv), or None."""
    spec = env_spec_of(env)
    return None if spec is None else str(spec.id)


def recreatable_spec(env: VecEnv | None) -> tuple[EnvSpec | None, str | None]:
    """
    The spec of the first env of ``env`` as ``gym.make`` can re-create it: the env's id, its keyword arguments, its time
    limit (``max_episode_steps``) and its wrappers. The spec of the *outer* env is used: ``env.unwrapped.spec`` has
    no time limit (Gymnasium sets ``max_episode_steps=None`` there), so an env made from it may never end an episode.

    :param env: the training env (or None)
    :return: the spec (None when there is none) and, when the spec cannot re-create the env exactly, why: a wrapper
        that records no constructor arguments (other than SB3's Monitor, which is dropped), or arguments that are
        not JSON-serialisable
    """
    if env is None:
        return None, "the model has no env"
    spec = env_spec_of(env)
    if spec is None:
        return None, "the env has no Gymnasium spec (it was not made with gym.make)"
    kept = tuple(wrapper for wrapper in spec.additional_wrappers if wrapper.name not in _SB3_WRAPPERS)
    spec = dataclasses.replace(spec, additional_wrappers=kept)
    lost = [wrapper.name for wrapper in kept if wrapper.kwargs is None]
    if lost:
        return None, f"its wrappers {lost} record no constructor arguments"
    try:
        spec.to_json()
    except (ValueError, TypeError) as error:  # a callable, or an object json cannot write, among its arguments
        return spec, f"its spec is not JSON-serialisable ({error})"
    return spec, None
