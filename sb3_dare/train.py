"""``python -m sb3_dare.train``: RL Zoo's ``train`` with sb3_dare's algorithms registered (no start-up hook needed)."""

from sb3_dare.zoo import register

if __name__ == "__main__":
    register()
    from rl_zoo3.train import train

    train()
