"""Networks shared by the algorithms: batched critic ensembles, value nets, actors, the observation normaliser."""

from __future__ import annotations

import math

import torch as th
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


def build_mlp(input_dim: int, output_dim: int, net_arch: list[int], activation_fn: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """
    A plain MLP: Linear + activation per hidden layer, then a linear output layer.

    :param input_dim: input features
    :param output_dim: outputs
    :param net_arch: hidden layer sizes
    :param activation_fn: activation class
    """
    layers: list[nn.Module] = []
    last = input_dim
    for width in net_arch:
        layers += [nn.Linear(last, width), activation_fn()]
        last = width
    layers.append(nn.Linear(last, output_dim))
    return nn.Sequential(*layers)


class ObservationNormalizer(nn.Module):
    """
    ``(obs - mean) / std`` with the statistics stored as buffers, so they travel in the policy's state dict.

    :param observation_dim: number of observation features
    """

    mean: th.Tensor
    std: th.Tensor
    initialized: th.Tensor

    def __init__(self, observation_dim: int):
        super().__init__()
        self.register_buffer("mean", th.zeros(observation_dim))
        self.register_buffer("std", th.ones(observation_dim))
        # a tensor flag (not a Python bool) so that it survives SB3's weights_only state-dict loading
        self.register_buffer("initialized", th.zeros((), dtype=th.bool))

    def set_statistics(self, mean: th.Tensor, std: th.Tensor) -> None:
        """Store the statistics (from the offline dataset)."""
        self.mean.copy_(th.as_tensor(mean, dtype=th.float32))
        self.std.copy_(th.as_tensor(std, dtype=th.float32))
        self.initialized.fill_(True)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return (observations - self.mean) / self.std


class EnsembleLinear(nn.Module):
    """
    ``n_members`` independent linear layers applied in one batched matrix multiply.

    :param in_features: input features
    :param out_features: output features
    :param n_members: number of independent layers
    """

    def __init__(self, in_features: int, out_features: int, n_members: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.n_members = n_members
        self.weight = nn.Parameter(th.empty(n_members, in_features, out_features))
        self.bias = nn.Parameter(th.empty(n_members, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same distribution as torch.nn.Linear's default initialisation, member by member
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, inputs: th.Tensor) -> th.Tensor:
        """
        :param inputs: (n_members, batch, in_features), or (batch, in_features) shared by all members
        :return: (n_members, batch, out_features)
        """
        if inputs.dim() == 2:
            # one (batch, in) x (in, n * out) product instead of n copies of the input
            flat_weight = self.weight.permute(1, 0, 2).reshape(self.in_features, -1)
            outputs = (inputs @ flat_weight).reshape(inputs.shape[0], self.n_members, self.out_features).transpose(0, 1)
            return outputs + self.bias
        return th.baddbmm(self.bias, inputs, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n_members={self.n_members}"


class EnsembleMLP(nn.Module):
    """
    ``n_members`` MLPs with identical shapes evaluated together (one batched call per layer).

    :param input_dim: input features
    :param output_dim: outputs per member
    :param net_arch: hidden layer sizes
    :param n_members: number of members
    :param activation_fn: activation class
    """

    def __init__(
        self, input_dim: int, output_dim: int, net_arch: list[int], n_members: int, activation_fn: type[nn.Module] = nn.ReLU
    ):
        super().__init__()
        sizes = [input_dim, *net_arch]
        self.hidden = nn.ModuleList(EnsembleLinear(sizes[i], sizes[i + 1], n_members) for i in range(len(net_arch)))
        self.output = EnsembleLinear(sizes[-1], output_dim, n_members)
        self.activation = activation_fn()

    def forward(self, inputs: th.Tensor) -> th.Tensor:
        hidden = inputs
        for layer in self.hidden:
            hidden = self.activation(layer(hidden))
        return self.output(hidden)


class QEnsemble(nn.Module):
    """
    Twin (or more) Q-networks ``Q_k(s, a)``, all evaluated in one batched call.

    :param observation_dim: observation features (already normalised by the caller)
    :param action_dim: action dimensions
    :param net_arch: hidden layer sizes of each critic
    :param n_critics: number of critics
    :param activation_fn: activation class
    """

    optimizer: th.optim.Optimizer

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        net_arch: list[int],
        n_critics: int = 2,
        activation_fn: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        self.n_critics = n_critics
        self.q_networks = EnsembleMLP(observation_dim + action_dim, 1, net_arch, n_critics, activation_fn)

    def forward(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        :param observations: (..., obs_dim)
        :param actions: (..., action_dim), same leading shape
        :return: (n_critics, ...) Q-values
        """
        leading = observations.shape[:-1]
        inputs = th.cat([observations, actions], dim=-1).reshape(-1, observations.shape[-1] + actions.shape[-1])
        return self.q_networks(inputs).reshape(self.n_critics, *leading)


class ValueNetwork(nn.Module):
    """
    State value ``V(s)``.

    :param observation_dim: observation features (already normalised by the caller)
    :param net_arch: hidden layer sizes
    :param activation_fn: activation class
    """

    optimizer: th.optim.Optimizer

    def __init__(self, observation_dim: int, net_arch: list[int], activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = build_mlp(observation_dim, 1, net_arch, activation_fn)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """:return: (batch,) values"""
        return self.net(observations).squeeze(-1)


class TanhMeanGaussianActor(nn.Module):
    """
    IQL's actor: a Gaussian ``N(tanh(f(s)), exp(log_std)^2)`` with a state-independent log-std.

    The mean is squashed, the distribution is not, so dataset actions on the bounds have finite
    log-probabilities without clipping. Stochastic actions are clipped to [-1, 1] when acting.
    The reparameterised samples of :meth:`action_log_prob` (used by DARE_IQL's online-like term) are
    drawn from the same Gaussian, and their log-probabilities are the Gaussian's: the critic sees them
    clipped to the bounds, as the env would.

    :param observation_dim: observation features (already normalised by the caller)
    :param action_dim: action dimensions
    :param net_arch: hidden layer sizes
    :param activation_fn: activation class
    """

    optimizer: th.optim.Optimizer

    def __init__(self, observation_dim: int, action_dim: int, net_arch: list[int], activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.mean_net = build_mlp(observation_dim, action_dim, net_arch, activation_fn)
        self.log_std = nn.Parameter(th.zeros(action_dim))

    def distribution(self, observations: th.Tensor) -> th.distributions.Normal:
        mean = th.tanh(self.mean_net(observations))
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        return th.distributions.Normal(mean, std.expand_as(mean))

    def forward(self, observations: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """:return: actions in [-1, 1]"""
        if deterministic:
            return th.tanh(self.mean_net(observations))
        return self.distribution(observations).sample().clamp(-1.0, 1.0)

    def log_prob(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """:return: (batch,) log-likelihood of the given actions"""
        return self.distribution(observations).log_prob(actions).sum(dim=-1)

    def action_log_prob(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """:return: reparameterised actions clipped to [-1, 1] and the log-probability of the unclipped sample"""
        distribution = self.distribution(observations)
        actions = distribution.rsample()
        return actions.clamp(-1.0, 1.0), distribution.log_prob(actions).sum(dim=-1)


class SquashedGaussianActor(nn.Module):
    """
    SAC's actor: ``a = tanh(u)``, ``u ~ N(mu(s), sigma(s)^2)``, with the tanh change of variables in the log-prob.

    :param observation_dim: observation features (already normalised by the caller)
    :param action_dim: action dimensions
    :param net_arch: hidden layer sizes
    :param activation_fn: activation class
    """

    optimizer: th.optim.Optimizer

    def __init__(self, observation_dim: int, action_dim: int, net_arch: list[int], activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.action_dim = action_dim
        self.trunk = build_mlp(observation_dim, 2 * action_dim, net_arch, activation_fn)

    def _mean_log_std(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        mean, log_std = self.trunk(observations).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, observations: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """:return: actions in [-1, 1]"""
        mean, log_std = self._mean_log_std(observations)
        if deterministic:
            return th.tanh(mean)
        return th.tanh(mean + log_std.exp() * th.randn_like(mean))

    def action_log_prob(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :param observations: (..., obs_dim)
        :return: reparameterised actions (..., action_dim) and their log-probabilities (...)
        """
        mean, log_std = self._mean_log_std(observations)
        noise = th.randn_like(mean)
        pre_tanh = mean + log_std.exp() * noise
        actions = th.tanh(pre_tanh)
        gaussian_log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=-1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), numerically stable form of log(1 - tanh(u)^2)
        log_det = (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(dim=-1)
        return actions, gaussian_log_prob - log_det
