from sb3_dare.iql.iql import IQL
from sb3_dare.iql.policies import IQLPolicy, MlpPolicy

__all__ = ["IQL", "IQLPolicy", "MlpPolicy"]
