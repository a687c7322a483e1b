"""The training engine: typed configs, AdamW + cosine schedule, atomic checkpoints, torchrun DDP."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import (ConfigError, DataSection, ModelSection, OptimSection, RunSection, TrainConfig, apply_overrides,
                     config_from_dict, load_config)
from .engine import Trainer, build_source, resolve_device
from .optim import cosine_lr, make_optimizer

__all__ = ["Trainer", "TrainConfig", "ModelSection", "DataSection", "OptimSection", "RunSection", "ConfigError",
           "load_config", "apply_overrides", "config_from_dict", "build_source", "resolve_device",
           "save_checkpoint", "load_checkpoint", "cosine_lr", "make_optimizer"]
