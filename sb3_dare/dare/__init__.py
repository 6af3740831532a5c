"""DARE: behaviour models, energy guidance and the DARE algorithms."""

from sb3_dare.dare.behavior import (
    BEHAVIOR_MODELS,
    BehaviorModel,
    load_behavior_model,
    make_behavior_model,
    register_behavior_model,
)
from sb3_dare.dare.dare import DARE_IQL, DARE_CalQL
from sb3_dare.dare.diffusion import DiffusionBehaviorModel, VPSchedule
from sb3_dare.dare.energy import TimeDependentEnergy, contrastive_energy_loss, train_energy_cep
from sb3_dare.dare.exchange import EXCHANGE_RULES
from sb3_dare.dare.gaussian import GaussianBehaviorModel

__all__ = [
    "BEHAVIOR_MODELS",
    "DARE_IQL",
    "EXCHANGE_RULES",
    "BehaviorModel",
    "DARE_CalQL",
    "DiffusionBehaviorModel",
    "GaussianBehaviorModel",
    "TimeDependentEnergy",
    "VPSchedule",
    "contrastive_energy_loss",
    "load_behavior_model",
    "make_behavior_model",
    "register_behavior_model",
    "train_energy_cep",
]
