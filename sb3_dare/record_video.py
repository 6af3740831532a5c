"""``python -m sb3_dare.record_video``: RL Zoo's ``record_video`` with sb3_dare's algorithms registered."""

import runpy

from sb3_dare.zoo import register

if __name__ == "__main__":
    register()
    # RL Zoo's record_video parses its arguments at module level, under `if __name__ == "__main__"`
    runpy.run_module("rl_zoo3.record_video", run_name="__main__", alter_sys=True)
