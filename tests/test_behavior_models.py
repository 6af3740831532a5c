"""Tests of the behaviour models (diffusion, gaussian), the samplers and CEP energy guidance."""

import copy
import json

import numpy as np
import pytest
import torch

from sb3_dare.dare import (
    BEHAVIOR_MODELS,
    BehaviorModel,
    DiffusionBehaviorModel,
    GaussianBehaviorModel,
    VPSchedule,
    load_behavior_model,
    make_behavior_model,
)

# Toy two-mode problem: 1-D actions at +0.6 / -0.6; the state bit flips the weights 0.7 / 0.3.
MODE = 0.6
MODE_WIDTH = 0.05
WEIGHT_PLUS = {0: 0.7, 1: 0.3}
STATES = np.array([[0.0], [1.0]], dtype=np.float32)
# Small but well-fitting settings: at lr 1e-3 the toy needs > 3000 steps to leave the loss plateau
# of a blurred model; lr 3e-3 leaves it in ~1500, and a second fit at 3e-4 settles the mode weights.
DIFFUSION_KWARGS = dict(hidden_sizes=[128, 128], energy_hidden_sizes=[64, 64], fourier_scale=4.0, learning_rate=3e-3)


def two_mode_data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bit = rng.integers(0, 2, n)
    p_plus = np.where(bit == 0, WEIGHT_PLUS[0], WEIGHT_PLUS[1])
    mode = np.where(rng.random(n) < p_plus, MODE, -MODE)
    actions = (mode + MODE_WIDTH * rng.standard_normal(n)).clip(-1, 1)
    return bit[:, None].astype(np.float32), actions[:, None].astype(np.float32)


def fraction_plus(actions: torch.Tensor) -> list[float]:
    """Per state, the fraction of sampled actions in the +0.6 mode."""
    return (actions[..., 0] > 0).float().mean(dim=1).tolist()


def near_modes(actions: torch.Tensor, tolerance: float = 0.15) -> float:
    return float(((actions.abs() - MODE).abs() < tolerance).float().mean())


def histogram(actions: torch.Tensor, bins: int = 20) -> np.ndarray:
    counts = torch.histc(actions.flatten().float(), bins=bins, min=-1.0, max=1.0).numpy()
    return counts / counts.sum()


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def toy_data() -> tuple[np.ndarray, np.ndarray]:
    return two_mode_data()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # These networks are tiny: a second intra-op thread does not help them, and on a busy 2-core
    # machine waiting for it made the fits ~15x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def diffusion_model(toy_data) -> DiffusionBehaviorModel:
    observations, actions = toy_data
    model = make_behavior_model("diffusion", 1, 1, **DIFFUSION_KWARGS)
    assert isinstance(model, DiffusionBehaviorModel)
    first = model.fit(observations, actions, n_steps=2000, seed=0)
    # A second fit continues training (same observation statistics) at a lower learning rate.
    second = model.fit(observations, actions, n_steps=1000, learning_rate=3e-4, seed=1)
    assert np.isfinite(first["loss"]) and second["loss"] < first["loss"] + 0.05
    return model


@pytest.fixture(scope="module")
def guided_model(diffusion_model, toy_data) -> DiffusionBehaviorModel:
    """A copy of the fitted model with an energy trained against Q(s, a) = a (the +0.6 mode is better)."""
    model = copy.deepcopy(diffusion_model)
    metrics = model.fit_energy(
        toy_data[0], lambda observations, actions: actions[:, 0], n_steps=400, energy_beta=1.0, n_support_actions=16, seed=0
    )
    # The loss can only approach the entropy of the targets from above (their difference is a KL divergence).
    assert metrics["loss"] >= metrics["target_entropy"] - 1e-4
    assert metrics["support_states"] == len(toy_data[0])
    return model


@pytest.fixture(scope="module")
def gaussian_model() -> GaussianBehaviorModel:
    observations, actions = unimodal_data()
    model = make_behavior_model("gaussian", 2, 1, hidden_sizes=[64, 64], learning_rate=3e-3)
    assert isinstance(model, GaussianBehaviorModel)
    model.fit(observations, actions, n_steps=300, seed=0)
    return model


def unimodal_data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Actions ~ N(0.1 + 0.25 s_0, 0.1^2); s_1 is noise the model must ignore."""
    rng = np.random.default_rng(seed)
    observations = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    actions = 0.1 + 0.25 * observations[:, :1] + 0.1 * rng.standard_normal((n, 1))
    return observations, actions.clip(-1, 1).astype(np.float32)


# ---------------------------------------------------------------------- samplers


def test_schedule_log_snr_inverse():
    schedule = VPSchedule()
    times = torch.linspace(1e-3, 1.0, 101, dtype=torch.float64)
    assert torch.allclose(schedule.time_from_log_snr(schedule.log_snr(times)), times, atol=1e-9)
    alpha, sigma = schedule.marginal(times)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(times))
    assert alpha[-1] < 0.01 and sigma[0] < 0.02  # nearly pure noise at t = 1, nearly clean at t = 1e-3


def test_solvers_with_exact_noise_prediction():
    """With the exact noise prediction of a Gaussian mixture, both samplers must recover it (no training involved)."""
    model = DiffusionBehaviorModel(1, 1, hidden_sizes=[8])
    model.fitted.fill_(True)
    means, weights = torch.tensor([MODE, -MODE]), torch.tensor([0.7, 0.3])

    def exact_noise(noisy_actions, time, observations):
        alpha, sigma = (value[:, None] for value in model.schedule.marginal(time))
        variance = alpha**2 * MODE_WIDTH**2 + sigma**2
        responsibilities = torch.softmax(torch.log(weights) - 0.5 * (noisy_actions - alpha * means) ** 2 / variance, dim=-1)
        score = (responsibilities * (alpha * means - noisy_actions) / variance).sum(dim=-1, keepdim=True)
        return -sigma * score

    model.predict_noise = exact_noise  # type: ignore[method-assign]
    states = np.zeros((1, 1), dtype=np.float32)
    solver = model.sample(states, n_samples=4000, generator=generator(0))
    reference = model.sample_reference(states, n_samples=4000, n_steps=1000, generator=generator(1))
    for actions in (solver, reference):
        assert fraction_plus(actions)[0] == pytest.approx(0.7, abs=0.04)
        assert near_modes(actions) > 0.97
        assert float(actions[actions > 0].std()) == pytest.approx(MODE_WIDTH, abs=0.015)
    assert np.abs(histogram(solver) - histogram(reference)).sum() / 2 < 0.06


def test_diffusion_reproduces_modes(diffusion_model):
    actions = diffusion_model.sample(STATES, n_samples=2000, generator=generator(0))
    assert actions.shape == (2, 2000, 1)
    assert actions.dtype == torch.float32
    assert float(actions.abs().max()) <= 1.0
    plus = fraction_plus(actions)
    assert plus[0] == pytest.approx(WEIGHT_PLUS[0], abs=0.08)
    assert plus[1] == pytest.approx(WEIGHT_PLUS[1], abs=0.08)
    assert near_modes(actions) > 0.8


def test_dpm_solver_agrees_with_reference_sampler(diffusion_model):
    solver = diffusion_model.sample(STATES, n_samples=2000, generator=generator(0))
    reference = diffusion_model.sample_reference(STATES, n_samples=1000, n_steps=1000, generator=generator(1))
    for state in (0, 1):
        assert fraction_plus(solver)[state] == pytest.approx(fraction_plus(reference)[state], abs=0.07)
        total_variation = np.abs(histogram(solver[state]) - histogram(reference[state])).sum() / 2
        assert total_variation < 0.2


def test_chunked_sampling_keeps_states_aligned(diffusion_model):
    # 400 states alternating between the two bits, in chunks of 5 states x 10 samples.
    states = np.tile(STATES, (200, 1))
    actions = diffusion_model.sample(states, n_samples=10, batch_size=50, generator=generator(0))
    assert actions.shape == (400, 10, 1)
    plus = np.array(fraction_plus(actions))
    assert plus[0::2].mean() == pytest.approx(WEIGHT_PLUS[0], abs=0.08)
    assert plus[1::2].mean() == pytest.approx(WEIGHT_PLUS[1], abs=0.08)


def test_numpy_and_torch_inputs_give_the_same_samples(diffusion_model):
    from_numpy = diffusion_model.sample(STATES, n_samples=5, generator=generator(3))
    from_torch = diffusion_model.sample(torch.as_tensor(STATES, dtype=torch.float64), n_samples=5, generator=generator(3))
    assert torch.equal(from_numpy, from_torch)
    assert not torch.equal(from_numpy, diffusion_model.sample(STATES, n_samples=5, generator=generator(4)))


@pytest.mark.parametrize("solver_steps", [5, 50])
def test_solver_steps_range_ends(diffusion_model, solver_steps):
    actions = diffusion_model.sample(STATES, n_samples=500, generator=generator(0), solver_steps=solver_steps)
    assert fraction_plus(actions)[0] > 0.5 > fraction_plus(actions)[1]


@pytest.mark.parametrize("setting", [{"clip_denoised": False}, {"time_spacing": "time"}])
def test_sampler_options(diffusion_model, setting):
    model = copy.deepcopy(diffusion_model)
    for key, value in setting.items():
        setattr(model, key, value)
    assert model.get_constructor_parameters().items() >= setting.items()
    actions = model.sample(STATES, n_samples=1000, generator=generator(0))
    assert fraction_plus(actions)[0] > 0.5 > fraction_plus(actions)[1]  # still a sampler of the data's modes
    # and the option took effect: the same noise gives other samples than the default sampler's
    assert not torch.allclose(actions, diffusion_model.sample(STATES, n_samples=1000, generator=generator(0)))


# ---------------------------------------------------------------------- energy guidance


def test_guidance_moves_samples_to_the_high_energy_mode(guided_model):
    plus = [
        fraction_plus(guided_model.sample(STATES, n_samples=2000, generator=generator(0), guidance_scale=scale))
        for scale in (0.0, 1.0, 5.0)
    ]
    for state in (0, 1):
        fractions = [fractions_at_scale[state] for fractions_at_scale in plus]
        assert fractions[0] == pytest.approx(WEIGHT_PLUS[state], abs=0.08)
        assert fractions[1] > fractions[0] + 0.05
        assert fractions[2] > fractions[1] + 0.02
        assert fractions[2] > 0.9
    # The model's own setting is the default of sample().
    guided_model.guidance_scale = 5.0
    try:
        assert fraction_plus(guided_model.sample(STATES, n_samples=2000, generator=generator(0))) == plus[2]
    finally:
        guided_model.guidance_scale = 0.0


def test_guided_reference_sampler_agrees(guided_model):
    solver = guided_model.sample(STATES, n_samples=1000, generator=generator(0), guidance_scale=1.0)
    reference = guided_model.sample_reference(STATES, n_samples=500, n_steps=500, generator=generator(1), guidance_scale=1.0)
    for state in (0, 1):
        assert fraction_plus(solver)[state] == pytest.approx(fraction_plus(reference)[state], abs=0.1)


def test_zero_guidance_skips_the_energy_network(guided_model, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the energy network must not run when guidance_scale = 0")

    monkeypatch.setattr(guided_model.energy, "forward", fail)
    actions = guided_model.sample(STATES, n_samples=10, generator=generator(0), guidance_scale=0.0)
    assert actions.shape == (2, 10, 1)
    with pytest.raises(AssertionError, match="must not run"):
        guided_model.sample(STATES, n_samples=10, guidance_scale=1.0)


def test_frozen_model_still_guides_and_refits(guided_model, toy_data):
    """Algorithms freeze the fitted model with requires_grad_(False): guidance and a later fit must still work."""
    model = copy.deepcopy(guided_model)
    expected = model.sample(STATES, n_samples=20, generator=generator(0), guidance_scale=2.0)
    model.requires_grad_(False)
    assert torch.equal(model.sample(STATES, n_samples=20, generator=generator(0), guidance_scale=2.0), expected)
    model.fit(*toy_data, n_steps=2)
    model.fit_energy(toy_data[0], lambda observations, actions: actions[:, 0], n_steps=2, max_support_states=50)
    assert not any(parameter.requires_grad for parameter in model.parameters())
    assert not model.training


def test_energy_uses_a_subsample_of_states(diffusion_model, toy_data):
    model = copy.deepcopy(diffusion_model)
    calls = []

    def q_fn(observations, actions):
        calls.append(observations.shape[0])
        return -((actions[:, 0] - MODE) ** 2)

    metrics = model.fit_energy(toy_data[0], q_fn, n_steps=2, n_support_actions=4, max_support_states=100, seed=0)
    assert metrics["support_states"] == 100
    # The Q-values of the support actions are computed once, before training.
    assert sum(calls) == 400
    assert model.has_energy


# ---------------------------------------------------------------------- gaussian model


@pytest.mark.parametrize("distribution", ["tanh", "plain"])
def test_gaussian_fits_unimodal_actions(distribution):
    observations, actions = unimodal_data()
    model = make_behavior_model("gaussian", 2, 1, hidden_sizes=[64, 64], distribution=distribution, learning_rate=3e-3)
    metrics = model.fit(observations, actions, n_steps=1500, seed=0)
    assert np.isfinite(metrics["loss"])
    states = np.array([[-0.8, 0.5], [0.0, -0.5], [0.8, 0.0]], dtype=np.float32)
    samples = model.sample(states, n_samples=4000, generator=generator(0))
    assert samples.shape == (3, 4000, 1)
    expected_mean = 0.1 + 0.25 * states[:, 0]
    np.testing.assert_allclose(samples.mean(dim=1)[:, 0].numpy(), expected_mean, atol=0.03)
    np.testing.assert_allclose(samples.std(dim=1)[:, 0].numpy(), 0.1, atol=0.02)
    log_probs = model.log_prob(states, torch.as_tensor(expected_mean[:, None]))
    assert log_probs.shape == (3,) and torch.isfinite(log_probs).all()
    # against torch.distributions, on the observations normalised with the fitted statistics
    mean, log_std = model.distribution_parameters(model.normalize(torch.as_tensor(states)))
    gaussian = torch.distributions.Normal(mean, log_std.exp())
    if distribution == "tanh":
        reference = torch.distributions.TransformedDistribution(gaussian, [torch.distributions.TanhTransform()])
    else:
        reference = gaussian
    expected = reference.log_prob(torch.as_tensor(expected_mean[:, None], dtype=torch.float32)).sum(dim=-1)
    torch.testing.assert_close(log_probs, expected.detach(), rtol=1e-4, atol=1e-4)


def test_gaussian_boundary_actions_have_finite_likelihood():
    observations = np.zeros((64, 1), dtype=np.float32)
    actions = np.tile(np.array([[-1.0], [1.0]], dtype=np.float32), (32, 1))
    model = make_behavior_model("gaussian", 1, 1, hidden_sizes=[16])
    assert np.isfinite(model.fit(observations, actions, n_steps=20, seed=0)["loss"])
    assert torch.isfinite(model.log_prob(observations, actions)).all()


# ---------------------------------------------------------------------- saving and loading


@pytest.mark.parametrize("fixture_name", ["guided_model", "gaussian_model"])
def test_save_load_gives_identical_samples(fixture_name, request, tmp_path):
    model = request.getfixturevalue(fixture_name)
    guidance = {"guidance_scale": 2.0} if model.supports_guidance else {}
    observations = np.array([[0.0, 0.3], [1.0, -0.2]], dtype=np.float32)[:, : model.observation_dim]
    expected = model.sample(observations, n_samples=8, generator=generator(7), **guidance)

    path = tmp_path / "behavior.pt"
    model.save(path)
    loaded = load_behavior_model(path)
    assert type(loaded) is type(model)
    assert type(model).load(path).is_fitted
    assert torch.equal(loaded.sample(observations, n_samples=8, generator=generator(7), **guidance), expected)

    # SB3 keeps only the state_dict in its zip and reads it with weights_only=True.
    torch.save(model.state_dict(), tmp_path / "state_dict.pt")
    fresh = type(model)(**model.get_constructor_parameters())
    assert not fresh.is_fitted
    fresh.load_state_dict(torch.load(tmp_path / "state_dict.pt", weights_only=True))
    assert fresh.is_fitted and fresh.has_energy == model.has_energy
    assert torch.equal(fresh.sample(observations, n_samples=8, generator=generator(7), **guidance), expected)


def test_constructor_parameters_are_plain_values():
    for name, model_class in BEHAVIOR_MODELS.items():
        model = make_behavior_model(name, 3, 2)
        assert isinstance(model, model_class) and model.name == name
        parameters = model.get_constructor_parameters()
        assert json.loads(json.dumps(parameters)) == parameters
        rebuilt = model_class(**parameters)
        assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_seeded_fit_is_reproducible():
    observations, actions = two_mode_data(256)
    state_dicts = []
    for _ in range(2):
        torch.manual_seed(len(state_dicts))  # a different global RNG state each time: the seed must win
        model = make_behavior_model("diffusion", 1, 1, hidden_sizes=[16], energy_hidden_sizes=[16])
        model.fit(observations, actions, n_steps=20, seed=123)
        state_dicts.append(model.state_dict())
    for key, value in state_dicts[0].items():
        assert torch.equal(value, state_dicts[1][key]), key


def test_fit_with_progress_bar_returns_metrics():
    observations, actions = two_mode_data(256)
    for name in BEHAVIOR_MODELS:
        model = make_behavior_model(name, 1, 1, hidden_sizes=[16])
        metrics = model.fit(torch.as_tensor(observations), torch.as_tensor(actions), n_steps=150, progress_bar=True)
        assert set(metrics) == {"loss"} and np.isfinite(metrics["loss"])
        assert model.is_fitted


def test_constant_observation_dimensions_are_only_centred():
    observations = np.stack([np.full(128, 5.0), np.linspace(-1, 1, 128)], axis=1).astype(np.float32)
    model = make_behavior_model("gaussian", 2, 1, hidden_sizes=[8])
    model.fit(observations, np.zeros((128, 1), dtype=np.float32), n_steps=1)
    assert model.observation_std[0] == 1.0 and model.observation_mean[0] == 5.0


# ---------------------------------------------------------------------- bad input


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"Unknown behaviour model 'vae'.*diffusion.*gaussian"):
        make_behavior_model("vae", 3, 2)


@pytest.mark.parametrize("name", ["diffusion", "gaussian"])
def test_bad_fit_inputs(name):
    model = make_behavior_model(name, 2, 1, hidden_sizes=[8])
    observations = np.zeros((10, 2), dtype=np.float32)
    actions = np.zeros((10, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=r"observations must have shape \(batch, observation_dim\) = \(batch, 2\)"):
        model.fit(np.zeros((10, 3)), actions, n_steps=1)
    with pytest.raises(ValueError, match=r"observations must have shape.*reshape"):
        model.fit(np.zeros(10), actions, n_steps=1)
    with pytest.raises(ValueError, match=r"actions must have shape \(batch, action_dim\) = \(batch, 1\)"):
        model.fit(observations, np.zeros((10, 2)), n_steps=1)
    with pytest.raises(ValueError, match="same number of rows"):
        model.fit(observations, actions[:5], n_steps=1)
    nan_observations = observations.copy()
    nan_observations[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"observations contain NaN.*first at row 3"):
        model.fit(nan_observations, actions, n_steps=1)
    with pytest.raises(ValueError, match="actions contain NaN"):
        model.fit(observations, np.full((10, 1), np.nan), n_steps=1)
    with pytest.raises(ValueError, match=r"actions must lie in \[-1, 1\].*rescale"):
        model.fit(observations, np.full((10, 1), 2.0), n_steps=1)
    with pytest.raises(ValueError, match="n_steps"):
        model.fit(observations, actions, n_steps=0)
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        model.fit([[0.0, 0.0]], actions, n_steps=1)
    with pytest.raises(ValueError, match=r"not fitted: call fit\("):
        model.sample(observations)
    assert not model.is_fitted


@pytest.mark.parametrize("name", ["diffusion", "gaussian"])
def test_bad_sample_inputs(name):
    model = make_behavior_model(name, 2, 1, hidden_sizes=[8])
    model.fit(np.zeros((10, 2), dtype=np.float32), np.zeros((10, 1), dtype=np.float32), n_steps=1)
    with pytest.raises(ValueError, match=r"observations must have shape"):
        model.sample(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        model.sample(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="n_samples"):
        model.sample(np.zeros((4, 2)), n_samples=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        model.sample(np.zeros((4, 2)), guidance_scale=-1.0)


def test_bad_diffusion_settings():
    with pytest.raises(ValueError, match=r"solver_steps must be an int in \[5, 50\]"):
        DiffusionBehaviorModel(2, 1, solver_steps=4)
    with pytest.raises(ValueError, match=r"solver_steps must be an int in \[5, 50\]"):
        DiffusionBehaviorModel(2, 1, solver_steps=51)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
        DiffusionBehaviorModel(2, 1, guidance_scale=-0.5)
    with pytest.raises(ValueError, match="time_spacing"):
        DiffusionBehaviorModel(2, 1, time_spacing="karras")
    with pytest.raises(ValueError, match="hidden_sizes"):
        DiffusionBehaviorModel(2, 1, hidden_sizes=[0])
    with pytest.raises(ValueError, match="observation_dim"):
        DiffusionBehaviorModel(0, 1)

    model = DiffusionBehaviorModel(2, 1, hidden_sizes=[8], energy_hidden_sizes=[8])
    with pytest.raises(ValueError, match="guidance_scale"):
        model.guidance_scale = -1.0
    observations = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"fit_energy needs a fitted behaviour model"):
        model.fit_energy(observations, lambda s, a: a[:, 0], n_steps=1)
    model.fit(observations, np.zeros((10, 1), dtype=np.float32), n_steps=1)
    with pytest.raises(ValueError, match=r"solver_steps must be an int in \[5, 50\]"):
        model.sample(observations, solver_steps=100)
    with pytest.raises(ValueError, match=r"needs a trained energy network: call fit_energy"):
        model.sample(observations, guidance_scale=1.0)
    with pytest.raises(ValueError, match=r"one Q-value per \(observation, action\) pair"):
        model.fit_energy(observations, lambda s, a: torch.zeros(len(a), 2), n_steps=1)
    with pytest.raises(ValueError, match="NaN or infinite Q-values"):
        model.fit_energy(observations, lambda s, a: torch.full((len(a),), float("nan")), n_steps=1)
    with pytest.raises(ValueError, match="n_support_actions"):
        model.fit_energy(observations, lambda s, a: a[:, 0], n_steps=1, n_support_actions=1)
    assert not model.has_energy


def test_gaussian_has_no_guidance():
    model = make_behavior_model("gaussian", 2, 1, hidden_sizes=[8])
    assert isinstance(model, BehaviorModel) and not model.supports_guidance and not model.has_energy
    observations = np.zeros((10, 2), dtype=np.float32)
    model.fit(observations, np.zeros((10, 1), dtype=np.float32), n_steps=1)
    with pytest.raises(ValueError, match="no energy guidance"):
        model.sample(observations, guidance_scale=1.0)
    assert model.sample(observations, guidance_scale=0.0).shape == (10, 1, 1)
    with pytest.raises(NotImplementedError, match="use the 'diffusion' behaviour model"):
        model.fit_energy(observations, lambda s, a: a[:, 0], n_steps=1)


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "not_a_model.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a behaviour model file"):
        load_behavior_model(path)
    model = make_behavior_model("gaussian", 2, 1, hidden_sizes=[8])
    model.save(path)
    with pytest.raises(ValueError, match="holds a GaussianBehaviorModel"):
        DiffusionBehaviorModel.load(path)


def test_solver_time_grids_and_clipping(diffusion_model):
    """time_spacing picks the solver's grid (uniform in t, or in log-SNR); clip_denoised bounds E[a_0 | a_t]."""
    model = copy.deepcopy(diffusion_model)
    model.time_spacing = "time"
    uniform = np.array(model._solver_times(4))
    np.testing.assert_allclose(np.diff(uniform), np.diff(uniform)[0])  # equal steps in t
    model.time_spacing = "logSNR"
    log_snr_grid = np.array(model._solver_times(4))
    assert log_snr_grid[0] == uniform[0] and log_snr_grid[-1] == uniform[-1]
    log_snrs = model.schedule.log_snr(torch.tensor(log_snr_grid, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(np.diff(log_snrs), np.diff(log_snrs)[0], rtol=1e-6)  # equal steps in log-SNR
    # at t = 1 with a far-off noisy action, the data prediction leaves [-1, 1] unless clipped
    noisy = torch.full((len(STATES), 1), 30.0)
    observations = model.normalize(torch.as_tensor(STATES)) if hasattr(model, "normalize") else torch.as_tensor(STATES)
    for clip in (True, False):
        model.clip_denoised = clip
        _, data = model._denoise(noisy, 1.0, observations, 0.0)
        assert bool(data.abs().max() <= 1.0) == clip
