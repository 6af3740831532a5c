"""Callbacks for the two phases: SB3 callbacks see env steps; ``on_offline_step()`` lets them see offline updates too."""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback, CallbackList


def offline_step_callbacks(callback: BaseCallback | None) -> list[BaseCallback]:
    """Every callback (inside CallbackLists too) that defines ``on_offline_step()``."""
    if callback is None:
        return []
    if isinstance(callback, CallbackList):
        return [found for child in callback.callbacks for found in offline_step_callbacks(child)]
    return [callback] if callable(getattr(callback, "on_offline_step", None)) else []


class O2OProgressBarCallback(BaseCallback):
    """
    One progress bar over both phases: offline updates first, then environment steps.

    :param offline_steps: offline updates still to run
    :param online_steps: environment steps of the online phase
    """

    def __init__(self, offline_steps: int, online_steps: int):
        super().__init__()
        try:
            from tqdm.rich import tqdm
        except ImportError as error:
            raise ImportError("The progress bar needs tqdm and rich: pip install tqdm rich") from error
        self._tqdm = tqdm
        self.offline_steps = offline_steps
        self.online_steps = online_steps
        self.pbar = None
        self._online_started = False

    def _on_training_start(self) -> None:
        if self.pbar is None:
            description = "offline updates" if self.offline_steps > 0 else "online steps"
            self.pbar = self._tqdm(total=self.offline_steps + self.online_steps, desc=description)

    def on_offline_step(self) -> bool:
        """Advance by one offline update."""
        if self.pbar is not None:
            self.pbar.update(1)
        return True

    def _on_step(self) -> bool:
        if self.pbar is not None:
            if not self._online_started:
                self._online_started = True
                self.pbar.set_description("online steps")
            self.pbar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        if self.pbar is not None:
            self.pbar.refresh()
            self.pbar.close()
            self.pbar = None
