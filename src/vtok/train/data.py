"""Which dataset items make up each training step (the images themselves: :mod:`vtok.data`)."""

from __future__ import annotations

import torch

__all__ = ["StepBatchSampler"]


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields the dataset indices of steps start..steps-1 for one rank."""

    def __init__(self, start_step: int, steps: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start_step, self.steps = start_step, steps
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self):
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps):
            first = step * global_batch + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))
