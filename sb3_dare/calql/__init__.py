from sb3_dare.calql.calql import CalQL
from sb3_dare.calql.policies import CalQLPolicy, MlpPolicy

__all__ = ["CalQL", "CalQLPolicy", "MlpPolicy"]
