"""The README's main job at a tiny budget, so that it cannot silently break."""

from __future__ import annotations

import json
import os

from sb3_dare.data import load_offline_data
from sb3_dare.quickstart import EMBEDDED_DATASET, main


def test_embedded_dataset_loads():
    data = load_offline_data(EMBEDDED_DATASET)
    assert data.env_id == "Pendulum-v1" and len(data) > 1000
    assert data.ref_min_score is not None and data.ref_max_score is not None


def test_quickstart_tiny_budget(tmp_path):
    output = tmp_path / "quickstart"
    main([
        "--offline-steps", "40", "--online-steps", "220", "--eval-freq", "110", "--eval-episodes", "1",
        "--behavior-model", "diffusion", "--behavior-steps", "30", "--energy-steps", "10", "--max-support-states", "200",
        "--net-arch", "16", "16", "--batch-size", "32", "--output", str(output), "--no-progress-bar",
    ])  # fmt: skip
    results = json.loads((output / "results.json").read_text())
    assert set(results["algorithms"]) == {"iql", "dare_iql"}
    for result in results["algorithms"].values():
        assert len(result["curve"]) == 2 and result["online_time_s"] > 0
    for plot in ("learning_curves.png", "dare_exchange.png", "dare_score_histogram.png"):
        assert os.path.getsize(output / plot) > 1000, plot
