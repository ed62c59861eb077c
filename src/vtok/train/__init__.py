"""Training: layered config, data, losses and the trainer."""

from .config import TrainConfig, load_config, load_run_config
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "load_config", "load_run_config"]
