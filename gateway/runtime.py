"""Per-process facts of one `serve`, which are not settings: which worker this is, and where
the workers of one `serve` keep the state they share.

`create_app(settings, runtime)` receives it. Without a runtime (tests, embedding the app in
another program) the app is a single process that runs its own managed powermem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUN_DIR_NAME", "Runtime"]

# The folder, inside the data dir, where one `serve` keeps state its processes share.
RUN_DIR_NAME = "run"


@dataclass(frozen=True)
class Runtime:
    """`worker` counts from 0 to `workers - 1`; `run_dir` is None outside `serve`."""

    worker: int = 0
    workers: int = 1
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.workers < 1 or not 0 <= self.worker < self.workers:
            raise ValueError(f"worker {self.worker} of {self.workers} is not a worker")

    @property
    def supervised(self) -> bool:
        """Whether a `serve` supervisor owns the managed powermem (and publishes its state)."""
        return self.run_dir is not None
