"""
Command line for offline datasets.

``python -m sb3_dare.data build --env Hopper-v5 --quality medium`` builds a Minari dataset of a D4RL-style
quality with SB3 SAC (see :mod:`sb3_dare.data.builder`); ``python -m sb3_dare.data info ID`` shows what a
dataset holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from sb3_dare.data import builder


def make_parser() -> argparse.ArgumentParser:
    """
    The argument parser of ``python -m sb3_dare.data``.

    :return: the parser, with subcommands ``build`` and ``info``
    """
    parser = argparse.ArgumentParser(
        prog="python -m sb3_dare.data",
        description="Build and inspect offline RL datasets (Minari format).",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="{build,info}")

    build = subcommands.add_parser(
        "build",
        help="build a dataset of a D4RL-style quality with SB3 SAC",
        description=(
            "Train SB3 SAC on an env (or reuse the cached run), then write a Minari dataset of the chosen quality under "
            "$MINARI_DATASETS_PATH (default ~/.minari/datasets). Trained policies are cached in "
            f"${builder.CACHE_ENV_VAR} (default {builder.DEFAULT_CACHE_DIR}), so further qualities of the same env, "
            "train steps and seed skip training."
        ),
    )
    build.add_argument("--env", required=True, help="Gymnasium env id with continuous actions, e.g. Hopper-v5")
    build.add_argument(
        "--quality",
        required=True,
        nargs="+",
        choices=builder.QUALITIES,
        metavar="QUALITY",
        help=f"one or more of: {', '.join(builder.QUALITIES)}",
    )
    build.add_argument("--id", dest="dataset_id", help="Minari dataset id (default: sb3_dare/<env>-v<N>/<quality>-v0)")
    build.add_argument(
        "--steps",
        type=int,
        help=f"transitions in the dataset (default {builder.DEFAULT_STEPS}; medium-replay: all of its replay, or the last N)",
    )
    build.add_argument(
        "--train-steps",
        type=int,
        help=f"SAC training steps (default {builder.DEFAULT_TRAIN_STEPS}, "
        f"Hopper {builder.DEFAULT_TRAIN_STEPS_BY_ENV['Hopper']})",
    )
    build.add_argument("--seed", type=int, default=0, help="seed of training, evaluation and collection (default 0)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the same id")
    build.add_argument(
        "--checkpoint-freq", type=int, help="steps between SAC checkpoints (default min(10000, train steps / 10))"
    )
    build.add_argument(
        "--checkpoint-episodes",
        type=int,
        default=builder.DEFAULT_CHECKPOINT_EPISODES,
        help=f"deterministic episodes evaluating each checkpoint (default {builder.DEFAULT_CHECKPOINT_EPISODES})",
    )
    build.add_argument(
        "--eval-episodes",
        type=int,
        default=builder.DEFAULT_EVAL_EPISODES,
        help=f"deterministic episodes of the final policy giving ref_max_score (default {builder.DEFAULT_EVAL_EPISODES})",
    )
    build.add_argument(
        "--sac-kwargs",
        type=_json_object,
        default={},
        help='extra SAC arguments as JSON, e.g. \'{"policy_kwargs": {"net_arch": [64, 64]}}\'',
    )
    build.add_argument("--env-kwargs", type=_json_object, default={}, help="extra gym.make arguments as JSON")
    build.add_argument(
        "--cache-dir", help=f"policy cache root (default ${builder.CACHE_ENV_VAR} or {builder.DEFAULT_CACHE_DIR})"
    )
    build.add_argument("--num-threads", type=int, help="torch threads (default: torch's choice)")
    build.add_argument("--no-progress-bar", action="store_true", help="hide the progress bars")
    build.add_argument("-v", "--verbose", type=int, default=1, help="0 quiet, 1 progress messages, 2 every checkpoint")

    info = subcommands.add_parser("info", help="show what a dataset holds", description="Show what a dataset holds.")
    info.add_argument("dataset", help="Minari dataset id (under $MINARI_DATASETS_PATH) or dataset folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line.

    :param argv: arguments without the program name (default: ``sys.argv[1:]``)
    :return: the exit status (0 on success, 1 on a user error, which is printed to stderr)
    """
    args = make_parser().parse_args(argv)
    try:
        if args.command == "build":
            return _build(args)
        return _info(args.dataset)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object ({{...}}), got {text}")
    return value


def _build(args: argparse.Namespace) -> int:
    import gymnasium as gym

    if args.dataset_id is not None and len(args.quality) > 1:
        raise ValueError("--id names one dataset: give one --quality with it, or leave --id out.")
    if args.num_threads is not None:
        import torch

        torch.set_num_threads(args.num_threads)
    for quality in args.quality:
        try:
            dataset = builder.build_dataset(
                args.env,
                quality,
                args.dataset_id,
                steps=args.steps,
                train_steps=args.train_steps,
                seed=args.seed,
                overwrite=args.overwrite,
                sac_kwargs=args.sac_kwargs,
                env_kwargs=args.env_kwargs,
                checkpoint_freq=args.checkpoint_freq,
                n_checkpoint_episodes=args.checkpoint_episodes,
                n_eval_episodes=args.eval_episodes,
                cache_dir=args.cache_dir,
                progress_bar=not args.no_progress_bar,
                verbose=args.verbose,
            )
        except gym.error.Error as error:  # unknown env ids and the like
            raise ValueError(f"{type(error).__name__}: {error}") from error
        if args.verbose >= 1:
            print(f"Inspect it with `python -m sb3_dare.data info {dataset.spec.dataset_id}`.")
    return 0


def _open_dataset(dataset: str) -> Any:
    """A ``minari.MinariDataset`` from an id or a folder, without trying to download."""
    import minari
    from minari.storage.datasets_root_dir import get_dataset_path

    from sb3_dare.data.loading import build_command_hint

    if os.path.isdir(dataset):
        data_path = os.path.join(dataset, "data") if os.path.isdir(os.path.join(dataset, "data")) else dataset
        return minari.MinariDataset(data_path)
    if not os.path.isdir(os.path.join(get_dataset_path(dataset), "data")):
        root = os.environ.get("MINARI_DATASETS_PATH", os.path.join("~", ".minari", "datasets"))
        raise FileNotFoundError(
            f"Dataset {dataset!r} is neither a folder nor a dataset id under {root} (MINARI_DATASETS_PATH). "
            f"Build it with `{build_command_hint(dataset)}`, or list the local ones with `minari list local`."
        )
    return minari.load_dataset(dataset)


def _info(dataset_name: str) -> int:
    from sb3_dare.data.loading import load_offline_data

    dataset = _open_dataset(dataset_name)
    metadata = dict(dataset.storage.metadata)
    # the statistics come from Minari's episodes, so that info describes any dataset, also one sb3_dare cannot train on
    returns, n_transitions, n_terminated, n_truncated = [], 0, 0, 0
    for episode in dataset.iterate_episodes():
        rewards = np.asarray(episode.rewards, dtype=np.float64).reshape(-1)
        if len(rewards) == 0:
            continue
        returns.append(rewards.sum())
        n_transitions += len(rewards)
        terminated = bool(np.asarray(episode.terminations).reshape(-1)[-1])
        n_terminated += terminated
        n_truncated += bool(np.asarray(episode.truncations).reshape(-1)[-1]) and not terminated
    episode_returns = np.asarray(returns) if returns else np.zeros(1)
    # Dict observations are loaded flattened: whether the training loader takes the dataset is shown, not assumed
    flatten = not hasattr(dataset.spec.observation_space, "shape") or dataset.spec.observation_space.shape is None
    try:
        load_offline_data(dataset, download=False, flatten_observations=flatten)
        trainable = "yes" + (" (with flatten_observations=True)" if flatten else "")
    except ValueError as error:
        trainable = f"no: {error}"
    env_spec = dataset.spec.env_spec
    rows: list[tuple[str, str]] = [
        (
            "location",
            f"{dataset.storage.data_path} ({metadata.get('dataset_size', '?')} MB, minari {metadata.get('minari_version')})",
        ),
        (
            "env",
            "none recorded" if env_spec is None else f"{env_spec.id} (max {env_spec.max_episode_steps} steps per episode)",
        ),
        ("observations", _describe_space(dataset.observation_space)),
        ("actions", _describe_space(dataset.action_space)),
        (
            "transitions",
            f"{n_transitions} in {len(returns)} episodes ({n_terminated} terminated, {n_truncated} truncated)",
        ),
        (
            "episode return",
            f"mean {episode_returns.mean():.1f}, std {episode_returns.std():.1f}, min {episode_returns.min():.1f}, "
            f"max {episode_returns.max():.1f}",
        ),
        ("sb3_dare can train on it", trainable),
    ]
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if ref_min is not None and ref_max is not None and ref_max != ref_min:
        scores = 100.0 * (episode_returns - ref_min) / (ref_max - ref_min)
        rows.append(
            (
                "normalised score",
                f"mean {scores.mean():.1f}, min {scores.min():.1f}, max {scores.max():.1f} (ref_min_score "
                f"{ref_min:.1f}, ref_max_score {ref_max:.1f})",
            )
        )
    else:
        rows.append(("normalised score", "unavailable: no ref_min_score / ref_max_score in the metadata"))
    for key, label in (("quality", "quality"), ("algorithm_name", "algorithm"), ("description", "description")):
        if key in metadata:
            rows.append((label, str(metadata[key])))
    versions = metadata.get("build_versions") or metadata.get("requirements")
    if versions:
        rows.append(("made with", ", ".join(versions)))
    print(dataset.spec.dataset_id)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    return 0


def _describe_space(space: Any) -> str:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        bounds = f" in [{low[0]:g}, {high[0]:g}]" if len(low) == 1 and len(high) == 1 else ""
        return f"Box{space.shape} {space.dtype}{bounds}"
    return str(space)


if __name__ == "__main__":
    sys.exit(main())
