"""The training engine: typed configs, AdamW + cosine schedule, atomic checkpoints, torchrun DDP."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import (RESUME_FREE_FIELDS, ConfigError, DataSection, ModelSection, OptimSection, RunSection,
                     TrainConfig, apply_overrides, builtin_configs, config_from_dict, load_config,
                     resolve_config_path, resume_config)
from .engine import Trainer, build_source, resolve_device
from .optim import cosine_lr, make_optimizer

__all__ = ["Trainer", "TrainConfig", "ModelSection", "DataSection", "OptimSection", "RunSection", "ConfigError",
           "load_config", "apply_overrides", "config_from_dict", "builtin_configs", "resolve_config_path",
           "resume_config", "RESUME_FREE_FIELDS", "build_source", "resolve_device", "save_checkpoint",
           "load_checkpoint", "cosine_lr", "make_optimizer"]
