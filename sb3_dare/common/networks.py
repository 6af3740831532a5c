"""Networks shared by the algorithms: batched critic ensembles, value nets, actors, the observation normaliser."""

from __future__ import annotations

import math
from typing import Any

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


def orthogonal_init_(module: nn.Module, hidden_gain: float = math.sqrt(2.0), output_gain: float = 1e-2) -> None:
    """
    Orthogonal initialisation of an MLP's linear layers (``nn.Linear`` and :class:`EnsembleLinear`, member by
    member), zero biases: gain ``hidden_gain`` for the hidden layers, ``output_gain`` for the last one (the
    Cal-QL and CQL reference codes' ``orthogonal_init``).

    :param module: the network; its linear layers are taken in registration order, the last being the output layer
    :param hidden_gain: gain of the hidden layers (sqrt(2), for ReLU)
    :param output_gain: gain of the output layer (small: outputs start near 0)
    """
    layers = [layer for layer in module.modules() if isinstance(layer, nn.Linear | EnsembleLinear)]
    with th.no_grad():
        for index, layer in enumerate(layers):
            gain = output_gain if index == len(layers) - 1 else hidden_gain
            if isinstance(layer, EnsembleLinear):
                for member in layer.weight:  # (in, out): initialised as the (out, in) matrix of an nn.Linear
                    nn.init.orthogonal_(member.T, gain=gain)
            else:
                nn.init.orthogonal_(layer.weight, gain=gain)
            nn.init.zeros_(layer.bias)


def soft_update(source: nn.Module, target: nn.Module, tau: float) -> None:
    """
    Polyak averaging ``target <- (1 - tau) target + tau source`` of every parameter, in one fused call
    (``torch._foreach_lerp_``) instead of two operations per parameter.

    :param source: the trained network
    :param target: its target copy (same parameter shapes, in the same order)
    :param tau: the soft update coefficient
    """
    with th.no_grad():
        th._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


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
            # a shared input is broadcast (a stride-0 view, no copy) into one batched product; this is several times
            # faster, forward and backward, than one (batch, in) x (in, n * out) product on a permuted weight copy
            inputs = inputs.unsqueeze(0).expand(self.n_members, -1, -1)
        if self.out_features == 1:
            return _SingleOutputProduct.apply(inputs, self.weight, self.bias)
        return th.baddbmm(self.bias, inputs, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n_members={self.n_members}"


class _SingleOutputProduct(th.autograd.Function):
    """
    ``inputs @ weight + bias`` for ensemble layers with one output (the critics' last layer), the same values as
    ``torch.baddbmm`` with products that suit a single output column: the batched matrix products of a one-column
    weight (in the forward pass and both gradients) run as slow general products on CPU, several times slower than
    these (a broadcast multiply for the inputs' gradient, a row-times-matrix product for the weight's).
    """

    @staticmethod
    def forward(ctx: Any, inputs: th.Tensor, weight: th.Tensor, bias: th.Tensor) -> th.Tensor:
        # inputs (n, rows, in), weight (n, in, 1), bias (n, 1, 1); a column-major copy of the (tiny) weight selects
        # the fast matrix-vector product
        ctx.save_for_backward(inputs, weight)
        return th.baddbmm(bias, inputs, weight.transpose(1, 2).contiguous().transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad_output: th.Tensor) -> tuple[th.Tensor | None, ...]:
        inputs, weight = ctx.saved_tensors
        grad_inputs = grad_output * weight.transpose(1, 2) if ctx.needs_input_grad[0] else None
        grad_weight = th.bmm(grad_output.transpose(1, 2), inputs).transpose(1, 2) if ctx.needs_input_grad[1] else None
        grad_bias = grad_output.sum(dim=1, keepdim=True) if ctx.needs_input_grad[2] else None
        return grad_inputs, grad_weight, grad_bias


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
        # ReLU is applied in place on each layer's fresh output (autograd keeps what its backward needs): one large
        # temporary less per layer, which matters for Cal-QL's thousands of state-action rows
        self._relu_in_place = type(self.activation) is nn.ReLU

    def forward(self, inputs: th.Tensor) -> th.Tensor:
        hidden = inputs
        for layer in self.hidden:
            hidden = layer(hidden)
            hidden = hidden.relu_() if self._relu_in_place else self.activation(hidden)
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

    def mean_log_std(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :param observations: (..., obs_dim)
        :return: the Gaussian's mean (..., action_dim) and its clipped log-std (action_dim,)
        """
        return th.tanh(self.mean_net(observations)), self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def distribution(self, observations: th.Tensor) -> th.distributions.Normal:
        """The action distribution as a ``torch.distributions.Normal`` (the training code uses the closed forms below)."""
        mean, log_std = self.mean_log_std(observations)
        return th.distributions.Normal(mean, log_std.exp().expand_as(mean))

    def forward(self, observations: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """:return: actions in [-1, 1]"""
        mean, log_std = self.mean_log_std(observations)
        if deterministic:
            return mean
        with th.no_grad():
            return (mean + log_std.exp() * th.randn_like(mean)).clamp(-1.0, 1.0)

    def log_prob(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """:return: (batch,) log-likelihood of the given actions"""
        mean, log_std = self.mean_log_std(observations)
        return gaussian_log_prob(actions, mean, log_std)

    def action_log_prob(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """:return: reparameterised actions clipped to [-1, 1] and the log-probability of the unclipped sample"""
        return self.sample_with_log_prob(*self.mean_log_std(observations))

    @staticmethod
    def sample_with_log_prob(mean: th.Tensor, log_std: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        Reparameterised actions from a Gaussian already computed by :meth:`mean_log_std` (a caller that also needs
        the log-likelihood of other actions under it evaluates the network once).

        :param mean: (..., action_dim) means
        :param log_std: (action_dim,) log-stds
        :return: the actions clipped to [-1, 1] and the log-probability of the unclipped sample
        """
        actions = mean + log_std.exp() * th.randn_like(mean)
        return actions.clamp(-1.0, 1.0), gaussian_log_prob(actions, mean, log_std)


def gaussian_log_prob(values: th.Tensor, mean: th.Tensor, log_std: th.Tensor) -> th.Tensor:
    """
    ``sum_i log N(values_i; mean_i, exp(log_std_i)^2)`` over the last dimension, in closed form: the same value as
    ``Normal(mean, std).log_prob(values).sum(-1)`` without building a distribution object (and its argument checks,
    which read values back to the host) at every update.
    """
    return (-((values - mean) ** 2) / (2.0 * (2.0 * log_std).exp()) - log_std - 0.5 * math.log(2.0 * math.pi)).sum(dim=-1)


class SquashedGaussianActor(nn.Module):
    """
    SAC's actor: ``a = tanh(u)``, ``u ~ N(mu(s), sigma(s)^2)``, with the tanh change of variables in the log-prob.

    :param observation_dim: observation features (already normalised by the caller)
    :param action_dim: action dimensions
    :param net_arch: hidden layer sizes
    :param activation_fn: activation class
    :param log_std_offset: None: the network's log-std output is the log-std. A float: the log-std is
        ``m * output + b`` with two learned scalars starting at ``m = 1`` and ``b = log_std_offset`` (the Cal-QL
        authors' actor, whose ``b`` starts at -1), before the clip to [LOG_STD_MIN, LOG_STD_MAX]
    """

    optimizer: th.optim.Optimizer

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        log_std_offset: float | None = None,
    ):
        super().__init__()
        self.action_dim = action_dim
        self.trunk = build_mlp(observation_dim, 2 * action_dim, net_arch, activation_fn)
        self.log_std_multiplier: nn.Parameter | None = None
        self.log_std_offset: nn.Parameter | None = None
        if log_std_offset is not None:
            self.log_std_multiplier = nn.Parameter(th.tensor(1.0))
            self.log_std_offset = nn.Parameter(th.tensor(float(log_std_offset)))

    def mean_log_std(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :param observations: (..., obs_dim)
        :return: the mean and the clipped log-std of the Gaussian before the tanh, each (..., action_dim)
        """
        mean, log_std = self.trunk(observations).chunk(2, dim=-1)
        if self.log_std_multiplier is not None and self.log_std_offset is not None:
            log_std = self.log_std_multiplier * log_std + self.log_std_offset
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, observations: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """:return: actions in [-1, 1]"""
        mean, log_std = self.mean_log_std(observations)
        if deterministic:
            return th.tanh(mean)
        return th.tanh(mean + log_std.exp() * th.randn_like(mean))

    def action_log_prob(self, observations: th.Tensor, n_samples: int | None = None) -> tuple[th.Tensor, th.Tensor]:
        """
        :param observations: (..., obs_dim)
        :param n_samples: None for one action per state; otherwise this many actions per state, drawn from one
            evaluation of the network per state (not one per action)
        :return: reparameterised actions (..., action_dim), or (..., n_samples, action_dim), and their log-probabilities
            (...), or (..., n_samples)
        """
        mean, log_std = self.mean_log_std(observations)
        if n_samples is not None:
            mean = mean.unsqueeze(-2).expand(*mean.shape[:-1], n_samples, mean.shape[-1])
            log_std = log_std.unsqueeze(-2).expand_as(mean)
        return self.sample_with_log_prob(mean, log_std)

    @staticmethod
    def sample_with_log_prob(mean: th.Tensor, log_std: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        Reparameterised actions ``tanh(mean + exp(log_std) * noise)`` and their log-probabilities.

        :param mean: (..., action_dim) means before the tanh (an expanded view draws one action per element)
        :param log_std: (..., action_dim) log-stds, same shape
        :return: actions (..., action_dim) and log-probabilities (...)
        """
        noise = th.randn(mean.shape, dtype=mean.dtype, device=mean.device)
        pre_tanh = mean + log_std.exp() * noise
        actions = th.tanh(pre_tanh)
        gaussian_log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=-1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), numerically stable form of log(1 - tanh(u)^2)
        log_det = (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(dim=-1)
        return actions, gaussian_log_prob - log_det
