"""
Start-up hook: lets ``python -m rl_zoo3.train --algo iql`` (enjoy, record_video, -optimize) find sb3_dare's algorithms.

``sb3_dare_zoo.pth`` (``sb3_dare_zoo.start`` from Python 3.15 on) calls :func:`install` at every interpreter start: it
puts a finder at the front of ``sys.meta_path`` and imports nothing else. When RL Zoo imports ``rl_zoo3.utils``,
``rl_zoo3.hyperparams_opt`` or ``rl_zoo3.exp_manager``, the finder hands over to ``sb3_dare.zoo``, which patches the
module right after it has run. This file stays outside the package and tiny on purpose: importing anything under
``sb3_dare`` imports torch (about a second), and this runs in every interpreter of the environment.
Switch it off with ``SB3_DARE_NO_ZOO_HOOK=1`` (``python -m sb3_dare.train`` works without it).
"""

import os
import sys

TARGET_MODULES = frozenset(("rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager"))


class ZooHookFinder:
    """Duck-typed meta-path finder (importing importlib.abc would cost milliseconds at every start)."""

    _sb3_dare_zoo_hook = True

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname not in TARGET_MODULES:
            return None
        try:
            from sb3_dare.zoo import find_patched_spec
        except Exception as error:  # a broken sb3_dare must not break RL Zoo
            import warnings

            warnings.warn(f"sb3_dare's RL Zoo hook is inactive ({error!r}); set SB3_DARE_NO_ZOO_HOOK=1 to silence this.")
            return None
        return find_patched_spec(fullname, path, target)


def install():
    """Put the finder first in ``sys.meta_path`` (once), unless ``SB3_DARE_NO_ZOO_HOOK`` is set to a true value."""
    if os.environ.get("SB3_DARE_NO_ZOO_HOOK", "").strip().lower() in ("", "0", "false", "no", "off"):
        if not any(getattr(finder, "_sb3_dare_zoo_hook", False) for finder in sys.meta_path):
            sys.meta_path.insert(0, ZooHookFinder)
