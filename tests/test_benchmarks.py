"""The O2O quality suite (benchmarks/o2o_suite.py) and its report (benchmarks/report.py): run matrix, skipping,
metrics on hand-made evaluation lists, and one end-to-end micro run on a tiny dataset."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    # the scripts import their neighbours (d3rlpy_env) as a script run from benchmarks/ would
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


suite = _load("o2o_suite")
report = _load("report")


def _evaluations(offline: list[tuple[int, float]], online: list[tuple[int, float]]) -> list[dict]:
    return [{"step": step, "phase": "offline", "normalized_score": score} for step, score in offline] + [
        {"step": step, "phase": "online", "normalized_score": score} for step, score in online
    ]


# ---------------------------------------------------------------------------------------------- the run matrix


def test_tier_m_matrix_follows_the_order_of_work():
    runs = suite.build_matrix(suite.TIERS["M"])
    # stage 1: the IQL family on every task at 5 seeds, bases before the DARE runs that reuse their checkpoints
    stage1 = runs[:30]
    assert {algorithm for algorithm, *_ in stage1} == {"iql", "dare_iql"}
    assert {task for _, task, _, _ in stage1} == set(suite.TASKS_M)
    assert sorted({seed for _, _, seed, _ in stage1}) == [0, 1, 2, 3, 4]
    assert stage1[:5] == [("iql", suite.HOPPER, seed, "default") for seed in range(5)]
    assert stage1[5] == ("dare_iql", suite.HOPPER, 0, "default")
    # stage 2: the CalQL family at 3 seeds
    stage2 = runs[30:48]
    assert {algorithm for algorithm, *_ in stage2} == {"calql", "dare_calql"}
    assert sorted({seed for _, _, seed, _ in stage2}) == [0, 1, 2]
    # stage 3: DARE_IQL's ablations on Hopper
    stage3 = runs[48 : 48 + 5 * len(suite.ABLATIONS)]
    assert {(algorithm, task) for algorithm, task, _, _ in stage3} == {("dare_iql", suite.HOPPER)}
    assert {variant for *_, variant in stage3} == set(suite.ABLATIONS)
    assert {"exchange-origin", "exchange-threshold", "exchange-random", "exchange-none", "gaussian", "guidance0"} <= set(
        suite.ABLATIONS
    )
    # then the rest, the peer row first; every run once
    assert runs[48 + 5 * len(suite.ABLATIONS)][0] == "d3rlpy_iql"
    assert len(runs) == len(set(runs))


def test_tier_s_and_filters():
    tier = suite.TIERS["S"]
    runs = suite.build_matrix(tier)
    assert runs == [
        ("iql", suite.HOPPER, 0, "default"),
        ("iql", suite.HOPPER, 1, "default"),
        ("dare_iql", suite.HOPPER, 0, "default"),
        ("dare_iql", suite.HOPPER, 1, "default"),
    ]
    specs = suite.make_specs(tier, runs)
    assert {(s.offline_steps, s.online_steps, s.online_eval_freq, s.tier) for s in specs} == {(5000, 5000, 500, "S")}
    calql = suite.make_specs(tier, suite.build_matrix(tier, algorithms=["calql"], seeds=[3]))
    assert [(s.algorithm, s.seed, s.net_arch) for s in calql] == [("calql", 3, (64, 64))]
    filtered = suite.build_matrix(suite.TIERS["M"], algorithms=["dare_iql"], variants=["gaussian"], tasks=[suite.HOPPER])
    assert filtered == [("dare_iql", suite.HOPPER, seed, "gaussian") for seed in range(5)]
    custom = suite.make_specs(tier, runs[:1], {"online_steps": 100})
    assert custom[0].tier.startswith("S-custom-") and custom[0].online_steps == 100
    with pytest.raises(ValueError, match="ablation"):
        suite.make_specs(tier, [("iql", suite.HOPPER, 0, "gaussian")])


def test_checkpoints_are_shared_within_a_family_and_seed(tmp_path):
    tier = suite.TIERS["M"]
    iql, dare, other_seed, calql = suite.make_specs(
        tier,
        [
            ("iql", suite.HOPPER, 0, "default"),
            ("dare_iql", suite.HOPPER, 0, "exchange-random"),
            ("iql", suite.HOPPER, 1, "default"),
            ("calql", suite.HOPPER, 0, "default"),
        ],
    )
    assert suite.checkpoint_dir(tmp_path, iql) == suite.checkpoint_dir(tmp_path, dare)
    assert suite.checkpoint_dir(tmp_path, iql) != suite.checkpoint_dir(tmp_path, other_seed)
    assert suite.checkpoint_dir(tmp_path, iql) != suite.checkpoint_dir(tmp_path, calql)
    assert suite.dare_kwargs(dare)["exchange"] == "random"
    assert suite.dare_kwargs(dare)["guidance_scale"] == 8.0  # the paper's value for hopper-medium


def test_git_revision_tells_which_changes_a_run_had(tmp_path):
    import subprocess

    def git(*arguments):
        subprocess.run(["git", *arguments], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    (tmp_path / "result.json").write_text("{}")  # untracked: not a code change
    clean = suite.git_revision(tmp_path)
    assert clean["dirty"] is False and clean["changed_files"] == [] and clean["diff_sha256"] is None
    (tmp_path / "code.py").write_text("x = 2\n")
    first = suite.git_revision(tmp_path)
    assert first["dirty"] and first["changed_files"] == ["code.py"] and first["commit"] == clean["commit"]
    assert suite.git_revision(tmp_path)["diff_sha256"] == first["diff_sha256"]  # the same changes, the same hash
    (tmp_path / "code.py").write_text("x = 3\n")
    assert suite.git_revision(tmp_path)["diff_sha256"] != first["diff_sha256"]
    (tmp_path / "with space.py").write_text("z = 1\n")
    git("add", "with space.py")
    assert suite.git_revision(tmp_path)["changed_files"] == ["code.py", "with space.py"]
    git("rm", "-q", "--cached", "with space.py")
    (tmp_path / "with space.py").unlink()
    (tmp_path / "helper.py").write_text("y = 1\n")  # a new source file is a code change; result.json is not
    with_source = suite.git_revision(tmp_path)
    assert with_source["changed_files"] == ["code.py", "helper.py (untracked)"]
    (tmp_path / "helper.py").write_text("y = 2\n")
    assert suite.git_revision(tmp_path)["diff_sha256"] != with_source["diff_sha256"]
    assert suite.git_revision(tmp_path / "not-a-repo") == dict.fromkeys(clean)


def test_done_runs_are_skipped(tmp_path):
    specs = suite.make_specs(suite.TIERS["S"], suite.build_matrix(suite.TIERS["S"]))
    assert suite.pending(tmp_path, specs) == specs
    suite.write_json_atomic(suite.result_path(tmp_path, specs[1]), {"status": "done"})
    suite.result_path(tmp_path, specs[2]).write_text("{not json")  # an interrupted copy is not a finished run
    assert suite.pending(tmp_path, specs) == [specs[0], specs[2], specs[3]]
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no temporary file left


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_on_hand_made_evaluations():
    evaluations = _evaluations(
        offline=[(2500, 20.0), (5000, 40.0)],
        online=[(500, 30.0), (1000, 10.0), (1500, 5.0), (4000, 50.0), (4500, 60.0), (5000, 70.0)],
    )
    assert report.offline_score(evaluations) == 40.0
    assert report.final_score(evaluations) == pytest.approx(60.0)  # mean of the last 3 online evaluations
    # lowest score in the first 20 % of 5000 online steps (steps 500 and 1000), not the later 5.0
    assert report.dip(evaluations, online_steps=5000) == pytest.approx(30.0)
    # trapezoids from (0, 40) over the online points, divided by 5000 steps
    points = [(0, 40.0), (500, 30.0), (1000, 10.0), (1500, 5.0), (4000, 50.0), (4500, 60.0), (5000, 70.0)]
    area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(points))
    assert report.online_auc(evaluations) == pytest.approx(area / 5000)


def test_metric_edge_cases():
    rising = _evaluations(offline=[(100, 10.0)], online=[(20, 15.0), (40, 30.0)])
    assert report.dip(rising, online_steps=100) == 0.0  # floored at 0
    assert report.final_score(rising) == pytest.approx(22.5)  # fewer than 3 online evaluations
    assert report.online_auc(rising) == pytest.approx(((10 + 15) / 2 * 20 + (15 + 30) / 2 * 20) / 40)
    offline_only = _evaluations(offline=[(100, 10.0)], online=[])
    assert report.final_score(offline_only) is None and report.dip(offline_only, 100) is None
    assert report.online_auc(offline_only) is None
    point, low, high = report.iqm_interval([[1.0], [2.0], [3.0], [100.0]], reps=200)
    assert point == pytest.approx(2.5) and low <= point <= high


def test_intervals_are_reproducible_and_leave_numpy_alone():
    # rliable draws its bootstrap indices from NumPy's global generator: the report seeds it per call and restores it
    table = np.array([[1.0, 4.0], [2.0, 7.0], [3.0, 5.0], [9.0, 6.0], [4.0, 8.0]])
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = report.iqm_interval(table, reps=300)
    assert np.random.rand() == expected_next
    assert report.iqm_interval(table, reps=300) == first


def test_paired_interval_is_students_t_over_seeds():
    differences = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    mean, low, high = report.paired_interval(differences)
    half_width = 2.7764451 * differences.std(ddof=1) / np.sqrt(5)  # t(0.975, 4 degrees of freedom)
    assert mean == pytest.approx(4.0) and (low, high) == pytest.approx((4.0 - half_width, 4.0 + half_width))
    # a (seeds x tasks) table: the seeds' means over tasks are the replicates
    table = np.array([[1.0, 3.0], [2.0, 6.0], [0.0, 2.0]])
    assert report.paired_interval(table) == pytest.approx(report.paired_interval(table.mean(axis=1)))
    point, low, high = report.paired_interval(np.array([5.0]))
    assert point == 5.0 and np.isnan(low) and np.isnan(high)
    # every seed's difference the same: no spread, so no interval and no p-value (not a zero-width 'beats', p = 0)
    point, low, high = report.paired_interval(np.array([2.0, 2.0, 2.0]))
    assert point == 2.0 and np.isnan(low) and np.isnan(high) and np.isnan(report.paired_p_value(np.array([2.0] * 3)))
    rounded = np.array([37.2 - 32.1, 40.3 - 35.2, 12.7 - 7.6])  # equal up to float rounding (std about 4e-15)
    assert np.isnan(report.paired_interval(rounded)[1]) and np.isnan(report.paired_p_value(rounded))
    assert report._verdict(low, high, higher_is_better=True) == "does not beat"


def test_intervals_of_four_seeds_or_fewer_are_labelled_as_such():
    # the IQM's percentile bootstrap over 3 or 4 values is their range: it is not written as a 95 % interval
    for values in (np.array([41.5, 43.6, 64.5]), np.array([35.6, 38.6, 48.6, 37.6])):
        point, low, high = report.iqm_interval(values, reps=2000)
        assert (low, high) == (values.min(), values.max())
        assert report._fmt_interval(point, low, high, len(values)) == (
            f"{point:.1f} ({len(values)} seeds: {low:.1f} to {high:.1f})"
        )
    five = np.array([30.0, 33.0, 29.9, 30.2, 41.1])
    point, low, high = report.iqm_interval(five, reps=2000)
    assert low > five.min() and report._fmt_interval(point, low, high, 5) == f"{point:.1f} [{low:.1f}, {high:.1f}]"
    assert report._fmt_interval(40.0, 38.0, 45.0, 2, per_task=True) == "40.0 (2 seeds a task: 38.0 to 45.0)"
    assert report._fmt_interval(40.0, 40.0, 40.0, 1) == "40.0 (1 seed)"


def test_comparisons_over_tasks_leave_out_seeds_missing_a_metric(monkeypatch):
    monkeypatch.setattr(report, "run_metrics", lambda run: run)
    base, dare = ("iql", "default"), ("dare_iql", "default")

    def run(final, dip):
        return {"final": final, "auc": final, "dip": dip}

    tasks = {
        task: {
            base: {seed: run(10.0 + seed, 5.0) for seed in range(4)},
            dare: {seed: run(12.0 + seed * 1.5, None if (task, seed) == ("b", 3) else 4.0 + seed) for seed in range(4)},
        }
        for task in ("a", "b")
    }
    statements = report._paired_over_tasks("DARE_IQL", "IQL", tasks, dare, base)
    texts = {statement.metric: statement.text for statement in statements}
    assert "over 2 tasks x 4 seeds" in texts["final"]
    assert "over 2 tasks x 3 seeds" in texts["dip"]  # seed 3 has no dip on task b: out of the dip's comparison only
    seeds_per_task = {seed: run(1.0, None) for seed in range(4)}
    tasks["a"][dare] = seeds_per_task  # no dip anywhere on task a: too few seeds for the dip's comparison
    statements = report._paired_over_tasks("DARE_IQL", "IQL", tasks, dare, base)
    assert [statement.metric for statement in statements[:2]] == ["final", "auc"]
    assert statements[2] == (
        "DARE_IQL against IQL on dip over 2 tasks: only 0 seeds with it on every task, fewer than the 3 a comparison needs."
    )


def test_peer_comparison_is_a_welch_interval(monkeypatch):
    from scipy import stats

    peer, ours = np.array([35.6, 38.6, 48.6, 37.6]), np.array([33.0, 33.1, 29.9, 30.2, 41.1])
    difference, low, high, p_value = report.welch_interval(peer, ours)
    variance = peer.var(ddof=1) / 4 + ours.var(ddof=1) / 5
    dof = variance**2 / ((peer.var(ddof=1) / 4) ** 2 / 3 + (ours.var(ddof=1) / 5) ** 2 / 4)  # Welch-Satterthwaite
    half_width = stats.t.ppf(0.975, dof) * np.sqrt(variance)
    assert difference == pytest.approx(peer.mean() - ours.mean())
    assert (low, high) == pytest.approx((difference - half_width, difference + half_width))
    assert p_value == pytest.approx(2 * stats.t.sf(difference / np.sqrt(variance), dof))

    # runs reduced to their final scores (run_metrics reads whole run JSONs)
    monkeypatch.setattr(report, "run_metrics", lambda run: run)

    def runs(finals):
        return {seed: {"final": float(value)} for seed, value in enumerate(finals)}

    statement = report.peer_statements({("d3rlpy_iql", "default"): runs(peer), ("iql", "default"): runs(ours)}, reps=50)
    assert "(Welch t interval)" in statement[0] and statement[0].endswith("no difference is claimed.")
    apart = report.peer_statements({("d3rlpy_iql", "default"): runs(peer + 30), ("iql", "default"): runs(ours)}, reps=50)
    assert apart[0].endswith("d3rlpy's IQL ends higher (unadjusted).")
    few = report.peer_statements({("d3rlpy_iql", "default"): runs(peer[:2] + 30), ("iql", "default"): runs(ours)}, 50)
    assert few[0].endswith("no difference is claimed (a claim needs 3 seeds a side).")


# ---------------------------------------------------------------------------------------------- end to end


def _micro_argv(
    task: str,
    results: Path,
    cache: Path,
    algorithms: list[str],
    seed: int,
    workers: int,
    steps: int,
    eval_freq: int,
    batch: int,
) -> list[str]:
    """Suite arguments of a micro run: ``steps`` offline and online steps, one-episode evaluations, 16-wide networks."""
    return [
        "--tier", "S", "--algorithms", *algorithms, "--tasks", task, "--seeds", str(seed), "--workers", str(workers),
        "--results-dir", str(results), "--cache-dir", str(cache), "--offline-steps", str(steps),
        "--online-steps", str(steps), "--eval-freq", str(eval_freq),
        "--eval-episodes", "1", "--batch-size", str(batch), "--net-arch", "16,16", "--behavior-steps", "20",
        "--energy-steps", "5", "--max-support-states", "100", "--behavior-net-arch", "16,16",
    ]  # fmt: skip


def test_micro_run_end_to_end(pendulum_balance_dataset, tmp_path, capsys):
    results, cache = tmp_path / "results", tmp_path / "cache"
    argv = _micro_argv(
        pendulum_balance_dataset, results, cache, ["iql", "dare_iql"], seed=0, workers=2, steps=60, eval_freq=20, batch=32
    )
    assert suite.main(argv) == 0, [p.read_text()[-3000:] for p in cache.glob("logs/*/stdout.log")]
    files = sorted(results.glob("*.json"))
    assert [path.name.split("__")[0] for path in files] == ["dare_iql", "iql"]
    runs = {json.loads(path.read_text())["algorithm"]: json.loads(path.read_text()) for path in files}
    for algorithm, run in runs.items():
        assert run["status"] == "done" and run["task"] == pendulum_balance_dataset and run["seed"] == 0
        assert run["variant"] == "default" and run["tier"].startswith("S-custom-")
        phases = [(item["phase"], item["step"]) for item in run["evaluations"]]
        assert phases == [("offline", 20), ("offline", 40), ("offline", 60), ("online", 20), ("online", 40), ("online", 60)]
        assert all(isinstance(item["normalized_score"], float) for item in run["evaluations"])
        assert run["config"]["spec"]["net_arch"] == [16, 16] and run["config"]["hyperparameters"]["batch_size"] == 32
        assert run["versions"]["torch"] and run["versions"]["sb3_dare"] and run["machine"]["at_start"]["torch_threads"] == 1
        compute = run["compute"]
        assert compute["offline"]["updates"] == 60 and compute["offline"]["updates_per_second"] > 0
        assert compute["online"]["env_steps"] == 60 and compute["online"]["updates"] == 60
        assert compute["online"]["steps_per_second"] > 0 and compute["total_wall_clock_s"] > 0
        assert (run["dare_diagnostics"] is not None) == (algorithm == "dare_iql")
    # one offline phase for both: same checkpoint, built by one run and reused by the other
    checkpoints = [run["config"]["offline_checkpoint"] for run in runs.values()]
    assert checkpoints[0]["key"] == checkpoints[1]["key"]
    assert {checkpoint["reused"] for checkpoint in checkpoints} == {True, False}
    assert runs["iql"]["evaluations"][:3] == runs["dare_iql"]["evaluations"][:3]
    dare = runs["dare_iql"]
    assert (
        dare["config"]["dare"]["guidance_scale"] == suite.DEFAULT_GUIDANCE and dare["compute"]["switch"]["behavior_fit_s"] > 0
    )
    assert {"step", "offline_like_fraction", "overlap"} <= set(dare["dare_diagnostics"])

    written = {path: path.read_bytes() for path in files}
    capsys.readouterr()
    assert suite.main(argv) == 0  # everything done: nothing runs again
    assert "2 runs, 2 done, 0 to run" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in files} == written
    # a done run made with other settings is not silently counted as done (nor overwritten)
    stored = json.loads(files[1].read_text())
    changed = copy.deepcopy(stored)
    changed["config"]["spec"]["batch_size"] = 64
    files[1].write_text(json.dumps(changed))
    assert suite.main(argv) == 2
    files[1].write_text(json.dumps(stored))
    summary = report.write_summary(report.load_results(results), results, reps=100)
    text = summary.read_text()
    # one seed can show no difference: the summary says so instead of a verdict
    assert "DARE_IQL does not beat IQL" in text and "1 paired seed cannot show a difference" in text
    assert "1 seed" in text and "60 offline + 60 online steps" in text
    assert len(list(results.glob("curves_*.png"))) == 1 and len(list(results.glob("exchange_*.png"))) == 1


def test_a_task_whose_dataset_cannot_be_loaded_stops_the_suite_before_any_run(tmp_path, capsys):
    results, cache = tmp_path / "results", tmp_path / "cache"
    missing = str(tmp_path / "no-such-dataset")
    argv = _micro_argv(missing, results, cache, ["iql"], seed=0, workers=1, steps=20, eval_freq=20, batch=32)
    assert suite.main(argv) == 2
    error = capsys.readouterr().err
    assert f"Task {missing!r}" in error and "does not exist" in error and "No run was started" in error
    assert not results.exists() and not (cache / "logs").exists()


def test_micro_run_calql_family_end_to_end(pendulum_balance_dataset, tmp_path):
    # the CalQL family's path through the suite (Cal-QL's checkpoint, DARE_CalQL's switch), before hours of tier M
    results, cache = tmp_path / "results", tmp_path / "cache"
    argv = _micro_argv(
        pendulum_balance_dataset, results, cache, ["calql", "dare_calql"], seed=1, workers=1, steps=30, eval_freq=15, batch=16
    )
    assert suite.main(argv) == 0, [p.read_text()[-3000:] for p in cache.glob("logs/*/stdout.log")]
    runs = {run["algorithm"]: run for run in (json.loads(path.read_text()) for path in results.glob("*.json"))}
    assert set(runs) == {"calql", "dare_calql"}
    for algorithm, run in runs.items():
        assert run["status"] == "done" and run["seed"] == 1 and run["config"]["spec"]["net_arch"] == [16, 16]
        assert [item["step"] for item in run["evaluations"] if item["phase"] == "online"] == [15, 30]
        assert run["compute"]["online"]["updates"] == 30 and run["compute"]["offline"]["updates"] == 30
        assert (run["dare_diagnostics"] is not None) == (algorithm == "dare_calql")
    checkpoints = [run["config"]["offline_checkpoint"] for run in runs.values()]
    assert checkpoints[0]["key"] == checkpoints[1]["key"]
    assert runs["calql"]["evaluations"][:2] == runs["dare_calql"]["evaluations"][:2]
    assert runs["dare_calql"]["config"]["dare"]["exchange"] == "posterior"


def test_ablation_rows_on_the_committed_results(tmp_path):
    # the committed tier-M ablations: each variant is compared with the paper's rule and with the base, and a
    # behaviour model that another run of the seed fitted is marked as a shared cost
    results = [
        result
        for result in report.load_results(BENCHMARKS / "results" / "o2o")
        if result["tier"] == "M" and result["task"] == suite.HOPPER and result["algorithm"] in ("iql", "dare_iql")
    ]
    variants = {result["variant"] for result in results if result["algorithm"] == "dare_iql"}
    if not {"default", "exchange-random", "gaussian"} <= variants:
        pytest.skip("the tier-M ablation results are not in this checkout")
    text = report.write_summary(results, tmp_path, reps=50).read_text()
    rows: dict[str, str] = {}
    diagnostics: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("| "):  # the scores table comes first, then the exchange diagnostics
            name = line.split(" | ")[0].lstrip("| ")
            (diagnostics if name in rows else rows)[name] = line
    assert diagnostics["DARE_IQL [exchange-none]"].endswith("| n/a (no exchange) |")
    # its swaps are measured too; the split's overlap was not logged by these runs (made before it existed)
    assert diagnostics["DARE_IQL [exchange-threshold]"].count("n/a") == 1
    assert diagnostics["DARE_IQL [exchange-threshold]"].endswith("| n/a (not logged) |")
    assert "(shared fit)" in rows["DARE_IQL [exchange-random]"]  # reuses the default run's guided diffusion model
    assert "(shared fit)" not in rows["DARE_IQL [gaussian]"] and "(shared fit)" not in rows["DARE_IQL"]
    for reference in ("DARE_IQL (the paper's rule)", "IQL"):
        verdict = rf"- DARE_IQL \[exchange-random\] (beats|does not beat|is worse than) {re.escape(reference)} on final score"
        assert re.search(verdict, text), reference


def test_p_values_and_holm_adjustment():
    differences = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    from scipy import stats

    assert report.paired_p_value(differences) == pytest.approx(stats.ttest_1samp(differences, 0.0).pvalue)
    table = np.array([[1.0, 3.0], [2.0, 6.0], [0.0, 2.0]])  # over tasks: the seeds' means are the replicates
    assert report.paired_p_value(table) == pytest.approx(stats.ttest_1samp(table.mean(axis=1), 0.0).pvalue)
    assert np.isnan(report.paired_p_value(np.array([5.0])))
    # Holm by hand: sorted 0.01, 0.02, 0.04 (NaN outside the family) -> 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 0.04)
    adjusted = report.holm_adjusted([0.04, float("nan"), 0.01, 0.02])
    assert adjusted[0] == pytest.approx(0.04) and np.isnan(adjusted[1])
    assert adjusted[2:] == pytest.approx([0.03, 0.04])
    assert report.holm_adjusted([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    lines, kept = report.adjust_and_render(
        [
            "a header",
            report.Comparison("X beats Y on final score", 0.001, "- "),
            report.Comparison("Z", 0.06),
            report.Comparison("W", 0.0001, eligible=False),  # 2 seeds: no claim, outside the family
        ]
    )
    assert lines[3] == "W; p = 0.000 (too few seeds for a claim: outside the Holm families)."
    assert lines[0] == "a header" and [c.text for c in kept["all"]] == ["X beats Y on final score"]
    assert lines[1] == "- X beats Y on final score; p = 0.001, Holm-adjusted 0.002 over the tier's 2 comparisons."


def test_primary_family_is_fixed_by_the_plan():
    # tier M's plan: (dare_iql, dare_calql) x (3 tasks + over tasks) x (final, dip)
    assert report.planned_primary_family_size("M") == 16 == report.planned_primary_family_size("M-custom-1a2b")
    assert report.planned_primary_family_size("S") == 2  # tier S runs the IQL family only, on one task
    assert report.planned_primary_family_size("unknown") is None
    # comparisons not yet measured count as p = 1: with 2 of 5 measured the multipliers are 5 and 4
    assert report.holm_adjusted([0.01, 0.02], family_size=5) == pytest.approx([0.05, 0.08])
    assert report.holm_adjusted([0.01, 0.02], family_size=1) == pytest.approx([0.02, 0.02])  # never below measured
    final = report.Comparison("A beats B on final score", 0.004, metric="final")
    auc = report.Comparison("A beats B on online AUC", 0.001, metric="auc")
    report._tagged([final, auc], "hopper", primary=True)
    assert final.primary and not auc.primary  # the online AUC is secondary: the paper claims final score and dip
    lines, kept = report.adjust_and_render([final, auc], primary_family_size=16)
    assert final.family_size == {"all": 2, "primary": 16} and final.adjusted["primary"] == pytest.approx(0.064)
    assert kept["primary"] == [] and kept["all"] == [final, auc]
    # judged in its planned family, the final score's 'beats' does not survive, and says so; the AUC's (secondary,
    # judged over the tier's 2 comparisons) survives and stands without a caveat
    assert lines[0].endswith(
        "0.064 over the 16 planned primary ones: 'beats' holds for this comparison alone, not after Holm's adjustment."
    )
    assert lines[1] == "A beats B on online AUC; p = 0.001, Holm-adjusted 0.002 over the tier's 2 comparisons."
    worse = report.Comparison("A is worse than B on dip", 0.03, metric="dip")
    plain = report.Comparison("A does not beat B on dip", 0.5, metric="dip")
    lines, _ = report.adjust_and_render([worse, plain])
    assert lines[0].endswith("not after Holm's adjustment.") and "'is worse than'" in lines[0]
    assert lines[1].endswith("over the tier's 2 comparisons.")  # no claim, nothing to qualify


def test_roofline_uses_the_best_gemm_of_the_run():
    speed = _load("speed")
    flops, rates = {"iql": 0.5e9, "calql": 7e9}, {"iql": 120.0, "calql": 16.0}
    rounds = [180.0, 200.0, 150.0]  # GFLOP/s of three rounds, each a best of 5
    best = speed.roofline_fractions(flops, rates, rounds)
    assert best == pytest.approx({"iql": 60 / 200, "calql": 112 / 200})
    assert speed.roofline_fractions(flops, rates, rounds, reference="median") == pytest.approx(
        {"iql": 60 / 180, "calql": 112 / 180}
    )


def test_gemm_bound_records_and_replays_the_matrix_products():
    import torch as th

    gemm_bound = _load("gemm_bound")
    left, right = th.randn(4, 3), th.randn(3, 5)

    def work() -> None:
        th.relu(th.mm(left, right))  # one product and one activation
        th.bmm(th.randn(2, 4, 3), th.randn(2, 3, 5).transpose(1, 2).contiguous().transpose(1, 2))

    calls = gemm_bound.record_products(work)
    assert [call[0].overloadpacket.__name__ for call in calls] == ["mm", "bmm"]
    assert calls[1][1][1] == (th.Size([2, 3, 5]), (15, 1, 3))  # the strides are kept (a column-major operand)
    # the replay runs the same products on random tensors of those layouts: recording it gives the same calls back
    assert gemm_bound.record_products(gemm_bound.replay(calls)) == calls


def test_diagnostic_cells_use_the_runs_that_logged_them():
    assert report._diagnostic_cell([[0.5, 0.7], [0.2, None]], 2) == "0.40"  # None: a non-finite value, left out
    assert report._diagnostic_cell([[0.5, 0.7], None], 2) == "0.60 (1 of 2 seeds)"  # a run made before the key existed
    assert report._diagnostic_cell([None, [None]], 2) == "n/a (not logged)"


def test_exchange_table_shows_the_mean_scores_of_both_buffers():
    # whether the online samples scored above the dataset's decides whether the posterior rule's side conditions hold
    def run(mu_off: float, mu_on: float) -> dict:
        series = {name: [0.5, 0.5] for name, _, _ in report.DIAGNOSTICS}
        return {"dare_diagnostics": {**series, "step": [1, 2], "mu_off": [mu_off, mu_off], "mu_on": [mu_on, mu_on + 0.2]}}

    intro, _, header, _, row, _ = report._diagnostics_rows({("dare_iql", "default"): {0: run(2.0, 1.0), 1: run(3.0, 1.0)}})
    assert "score above the dataset's" in intro
    titles = header.strip("| ").split(" | ")
    cells = dict(zip(titles, row.strip("| ").split(" | "), strict=True))
    assert cells["mean score, offline-buffer samples"] == "2.50"
    assert cells["mean score, online-buffer samples"] == "1.10"


def test_conditions_say_how_many_runs_had_uncommitted_changes_and_which():
    results = [r for r in report.load_results(BENCHMARKS / "results" / "o2o") if r["algorithm"] == "iql"][:1]
    if not results:
        pytest.skip("no committed IQL result in this checkout")
    base = results[0]

    def with_git(**git):
        run = copy.deepcopy(base)
        run["git"] = {"commit": "0123456789abcdef", **git}
        return run

    def code_line(runs):
        return next(line for line in report._conditions(runs) if line.startswith("- Code:"))

    clean = with_git(dirty=False, changed_files=[], diff_sha256=None)
    assert code_line([clean]) == "- Code: commit 0123456789."
    recorded = [with_git(dirty=True, changed_files=["a.py"], diff_sha256=h) for h in ("x", "x", "y")]
    older = with_git(dirty=True)  # before the diffs were recorded
    assert code_line([clean, *recorded, older]) == (
        "- Code: commit 0123456789 with uncommitted changes in 4 runs (2 distinct diffs recorded; 1 older runs record none)."
    )
    assert code_line([older]) == "- Code: commit 0123456789 with uncommitted changes in 1 run (their diffs were not recorded)."


# ---------------------------------------------------------------------------------------------- score order at the switch

score_order = _load("score_order")


def test_auc_is_the_share_of_pairs_in_order_with_ties_halved():
    assert score_order.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert score_order.auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert score_order.auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    rng = np.random.default_rng(0)
    higher, lower = rng.integers(0, 5, size=40).astype(float), rng.integers(0, 5, size=30).astype(float)  # many ties
    pairs = (higher[:, None] > lower[None, :]).mean() + 0.5 * (higher[:, None] == lower[None, :]).mean()
    assert score_order.auc(higher, lower) == pytest.approx(pairs)


def test_score_order_on_a_suite_checkpoint(pendulum_balance_dataset, tmp_path):
    import torch as th

    from sb3_dare import IQL
    from sb3_dare.dare.alignment import alignment_scores, scores_from_references
    from sb3_dare.dare.behavior import make_behavior_model
    from sb3_dare.data import load_offline_data

    # a checkpoint folder as the suite writes it: model.zip, meta.json and an (unguided) behaviour model
    model = IQL(
        "MlpPolicy",
        None,
        dataset=pendulum_balance_dataset,
        offline_steps=20,
        batch_size=32,
        policy_kwargs=dict(net_arch=[16, 16]),
        offline_eval_freq=0,
        seed=0,
    )
    model.pretrain()
    model.save(tmp_path / "model.zip")
    (tmp_path / "meta.json").write_text(
        json.dumps({"offline_config": {"family": "iql", "task": pendulum_balance_dataset, "seed": 0}})
    )
    data = load_offline_data(pendulum_balance_dataset)
    behavior = make_behavior_model("diffusion", data.observations.shape[1], data.actions.shape[1], hidden_sizes=[32, 32])
    behavior.fit(data.observations, data.actions, n_steps=30, batch_size=64, seed=0)
    behavior_path = tmp_path / "behavior-unguided.pt"
    behavior.save(behavior_path)

    with pytest.raises(SystemExit, match=r"no guided behaviour model.*--behavior"):
        score_order.main(["--checkpoint", str(tmp_path), "--states", "64"])
    with pytest.raises(SystemExit, match="not a suite checkpoint folder"):
        score_order.main(["--checkpoint", str(tmp_path / "missing")])
    (tmp_path / "results").mkdir()
    out = tmp_path / "results" / "order.json"
    argv = ["--checkpoint", str(tmp_path), "--behavior", str(behavior_path), "--states", "64", "--out", str(out)]
    assert score_order.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["n_states"] == 64 and result["task"] == pendulum_balance_dataset
    rows = result["rows"]
    settings = [(row["guidance_scale"], row["n_reference_samples"], row["reduction"], row["sigma"]) for row in rows]
    assert settings == [(0.0, *setting) for setting in score_order.SCORE_SETTINGS]  # no guidance: one scale only
    for row in rows:
        assert set(row["mean_score"]) == set(score_order.SOURCES)
        assert all(0.0 <= value <= 1.0 for value in row["auc_vs_dataset"].values())
    assert score_order.main(["--summary", str(out.parent)]) == 0  # one table row per checkpoint and guidance scale
    table = [line for line in (out.parent / "summary.md").read_text().splitlines() if pendulum_balance_dataset in line]
    assert len(table) == 1 and f"| {rows[0]['auc_vs_dataset']['actor_sample']:.2f} |" in table[0]

    # a guidance sweep: an unguided model takes only scale 0, negative scales are refused, and with an energy network
    # each scale reuses the same noise, so the rows at 0 equal those of the run that scored 0 alone
    with pytest.raises(SystemExit, match="no energy network"):
        score_order.main([*argv[:-2], "--guidance-scales", "0", "2"])
    with pytest.raises(SystemExit, match="finite and >= 0"):
        score_order.main([*argv[:-2], "--guidance-scales", "-1"])
    behavior.fit_energy(data.observations, lambda s, a: -a.pow(2).sum(dim=-1), n_steps=5, max_support_states=100, seed=0)
    behavior.save(behavior_path)
    sweep = out.parent / "sweep.json"
    assert score_order.main([*argv[:-2], "--guidance-scales", "2", "0", "0.5", "--out", str(sweep)]) == 0
    swept = json.loads(sweep.read_text())
    assert [block["guidance_scale"] for block in swept["references"]] == [2.0, 0.5, 0.0]
    assert [row for row in swept["rows"] if row["guidance_scale"] == 0.0] == result["rows"]
    assert score_order.main(["--summary", str(out.parent)]) == 0  # sweep.json and order.json: a table by scale
    by_scale = (out.parent / "summary.md").read_text().split("By guidance scale")[1]
    assert "| w = 0 | w = 0.5 | w = 2 |" in by_scale and "| - | - |" in by_scale  # order.json has scale 0 only
    # without --behavior the folder's one guided model is found; a second guided one makes the choice ambiguous
    found = tmp_path / "found.json"
    discover = ["--checkpoint", str(tmp_path), "--states", "8", "--guidance-scales", "0"]
    assert score_order.main([*discover, "--out", str(found)]) == 0
    assert json.loads(found.read_text())["behavior"] == behavior_path.name
    behavior.save(tmp_path / "behavior-second.pt")
    with pytest.raises(SystemExit, match="several guided behaviour models"):
        score_order.main(discover)

    # the rows hold the package's own scores: alignment_scores with the same seed draws the same 16 references
    index = np.arange(64)
    observations, actions = data.observations[index], data.actions[index]
    scored = score_order.score_order(behavior, observations, {"dataset": actions, "shifted": actions + 0.5}, [0.0], seed=3)
    rows = scored["rows"]
    references = behavior.sample(th.as_tensor(observations), n_samples=16, generator=th.Generator().manual_seed(3))
    for row in rows:
        k = row["n_reference_samples"]
        expected = alignment_scores(
            behavior,
            observations,
            actions,
            n_reference_samples=16,
            reduction=row["reduction"],
            sigma=row["sigma"],
            generator=th.Generator().manual_seed(3),
        )
        if k == 1:  # the first of the 16 references: DARE's default score in distribution
            expected = scores_from_references(references[:, :1], th.as_tensor(actions))
        assert row["mean_score"]["dataset"] == pytest.approx(float(expected.mean()), rel=1e-5)
        assert row["std_score"]["dataset"] == pytest.approx(float(expected.numpy().std()), rel=1e-4)
        assert 0.0 < row["auc_standard_error"]["shifted"] < 0.1
    # and the decomposition is exact: mean_k ||a_k - a||^2 = ||a - m||^2 + tr S (sigma = 1: both halved)
    mean_row = next(row for row in rows if row["n_reference_samples"] == 16 and row["reduction"] == "mean")
    (block,) = scored["references"]
    assert block["at_bounds"]["dataset"] == pytest.approx(float((np.abs(actions) > 0.99).mean()))
    assert 0.0 <= block["at_bounds"]["references"] <= 1.0
    for source in ("dataset", "shifted"):
        total = block["distance_to_reference_mean"][source] + block["spread_tr_S"]
        assert mean_row["mean_score"][source] == pytest.approx(total / 2, rel=1e-5)
        unbiased = block["distance_to_sampler_mean_unbiased"][source] + block["spread_tr_Sigma_unbiased"]
        assert total == pytest.approx(unbiased, rel=1e-5)  # the same total, split without the estimators' bias
    with pytest.raises(ValueError, match="'dataset'"):
        score_order.score_order(behavior, observations, {"shifted": actions}, [0.0])
    with pytest.raises(ValueError, match="one row per observation"):
        score_order.score_order(behavior, observations, {"dataset": actions[:10]}, [0.0])
    with pytest.raises(ValueError, match="non-empty"):
        score_order.score_order(behavior, observations, {"dataset": actions}, [0.0], settings=[])


def test_energy_target_measures_how_peaked_the_cep_target_is(pendulum_balance_dataset):
    import torch as th

    from sb3_dare.dare.behavior import make_behavior_model
    from sb3_dare.data import load_offline_data

    data = load_offline_data(pendulum_balance_dataset)
    behavior = make_behavior_model("diffusion", data.observations.shape[1], data.actions.shape[1], hidden_sizes=[32, 32])
    behavior.fit(data.observations, data.actions, n_steps=20, batch_size=64, seed=0)
    observations = data.observations[:32]
    flat = score_order.energy_target(lambda s, a: a[:, 0] * 0.0, behavior, observations, energy_beta=3.0, guidance_scale=8.0)
    assert flat["q_range_median"] == 0.0 and flat["guided_log_ratio_median"] == 0.0
    assert flat["target_entropy_median"] == pytest.approx(np.log(16)) and flat[
        "target_max_probability_median"
    ] == pytest.approx(1 / 16)
    # Q distinct by 1,000 between the support actions of a state: a one-hot target
    steep = score_order.energy_target(
        lambda s, a: 1000.0 * th.arange(len(a), dtype=th.float32), behavior, observations, energy_beta=3.0, guidance_scale=8.0
    )
    assert steep["q_range_median"] == 15_000.0 and steep["guided_log_ratio_median"] == 24.0 * 15_000.0
    assert steep["target_entropy_median"] < 1e-6 and steep["target_max_probability_median"] == pytest.approx(1.0)


def test_scores_from_references_rejects_shapes_that_would_broadcast():
    import torch as th

    from sb3_dare.dare.alignment import scores_from_references

    references, actions = th.zeros(5, 3, 1), th.ones(5, 1)
    assert scores_from_references(references, actions).tolist() == [0.5] * 5
    with pytest.raises(ValueError, match=r"\(n, action_dim\)"):
        scores_from_references(references, actions.squeeze(-1))  # (n,) would broadcast to an (n, n) result
    with pytest.raises(ValueError, match=r"\(n, action_dim\)"):
        scores_from_references(references, th.ones(1, 1))
    with pytest.raises(ValueError, match="sigma"):
        scores_from_references(references, actions, sigma=0.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        score_order.auc(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="finite"):
        score_order.auc(np.array([np.nan, 1.0]), np.array([0.5]))
