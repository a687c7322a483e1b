"""Typed training configuration: dataclasses, loaded from YAML, overridden by ``key=value``.

Every check that can fail runs before training starts and raises :class:`ConfigError`
with the dotted field name, which the CLI turns into one line and exit code 2.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

__all__ = ["ConfigError", "ModelSection", "DataSection", "OptimSection", "RunSection", "TrainConfig",
           "load_config", "apply_overrides", "config_from_dict", "builtin_configs", "resolve_config_path",
           "resume_config", "RESUME_FREE_FIELDS", "check_device_name", "trajectory_changes"]


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (names the field)."""


@dataclass
class ModelSection:
    arch: str = "memory_mosaics"  #: memory_mosaics | gpt
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    block_size: int = 128
    method: str = "softmax"
    topk: int = 8
    dropout: float = 0.0
    learn_alpha: bool = False
    pmem_size: int | None = None  #: Memory Mosaics persistent slots (default 3.5·n_embd)
    init: str = "default"  #: Memory Mosaics weight init: default | paper (N(0, 1/fan_in), out /sqrt(L))
    parametrization: str = "default"  #: Memory Mosaics β/λ/value/persistent-memory form: default | paper
    attn_dropout: float = 0.0  #: Memory Mosaics dropout on persistent-memory slot weights
    embd_dropout: float | None = None  #: Memory Mosaics embedding dropout (default: model.dropout)
    n_kv_head: int | None = None  #: GPT grouped-query heads
    vocab_size: int | None = None  #: default: the data's vocabulary


@dataclass
class DataSection:
    source: str = "stories"  #: stories (built-in) | text (a file, folder or JSONL at `path`) | a task name
    path: str | None = None
    text_field: str = "text"
    seq_len: int = 128
    n_stories: int = 2000
    options: dict = field(default_factory=dict)  #: extra arguments for task sources


@dataclass
class OptimSection:
    lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 20
    max_steps: int = 200
    grad_clip: float = 1.0
    batch_size: int = 16  #: global sequences per optimiser step (all processes, all micro-steps)
    grad_accum: int = 1


@dataclass
class RunSection:
    out_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"  #: auto | cpu | cuda | cuda:N
    amp: str = "auto"  #: auto (bf16 on CUDA when supported) | bf16 | fp16 | off
    eval_interval: int = 50
    eval_batches: int = 4
    log_interval: int = 10
    ckpt_interval: int = 50
    tensorboard: bool = False
    progress: bool = True
    threads: int | None = None


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "TrainConfig":
        m, d, o, r = self.model, self.data, self.optim, self.run
        from ..models import ARCHITECTURES
        from ..mappings import resolve_mapping

        if m.arch not in ARCHITECTURES:
            raise ConfigError(f"model.arch={m.arch!r}: choose one of {', '.join(ARCHITECTURES)}")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "topk"):
            if getattr(m, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
        if m.n_embd % m.n_head:
            raise ConfigError(f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}")
        try:
            resolve_mapping(m.method, topk=m.topk)
        except ValueError as e:
            raise ConfigError(f"model.method: {e}") from None
        for name in ("init", "parametrization"):
            if getattr(m, name) not in ("default", "paper"):
                raise ConfigError(f"model.{name}={getattr(m, name)!r}: choose default or paper")
        for name in ("dropout", "attn_dropout", "embd_dropout"):
            v = getattr(m, name)
            if v is not None and not 0.0 <= v < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {v}")
        if m.arch == "gpt":
            non_default = [f"model.{f.name}" for f in dataclasses.fields(ModelSection)
                           if f.name in ("init", "parametrization", "attn_dropout", "embd_dropout")
                           and getattr(m, f.name) != f.default]
            if non_default:
                raise ConfigError(f"{', '.join(non_default)} apply to model.arch=memory_mosaics only; "
                                  f"leave them unset for gpt")
        if d.seq_len < 1:
            raise ConfigError(f"data.seq_len must be >= 1, got {d.seq_len}")
        if d.seq_len > m.block_size:
            raise ConfigError(f"data.seq_len={d.seq_len} is larger than model.block_size={m.block_size} "
                              f"allows; raise model.block_size or lower data.seq_len")
        if d.source == "text":
            if not d.path:
                raise ConfigError("data.path is required when data.source=text")
            if not Path(d.path).exists():
                raise ConfigError(f"data.path={d.path!r} does not exist")
        for name in ("lr", "batch_size", "grad_accum", "max_steps"):
            if not getattr(o, name) > 0:
                raise ConfigError(f"optim.{name} must be > 0, got {getattr(o, name)}")
        if o.batch_size % o.grad_accum:
            raise ConfigError(f"optim.batch_size={o.batch_size} must be divisible by optim.grad_accum={o.grad_accum}")
        if o.warmup_steps < 0 or o.min_lr < 0 or o.grad_clip < 0:
            raise ConfigError("optim.warmup_steps, optim.min_lr and optim.grad_clip must be >= 0")
        if r.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"run.amp={r.amp!r}: choose auto, bf16, fp16 or off")
        for name in ("eval_interval", "log_interval", "ckpt_interval", "eval_batches"):
            if getattr(r, name) < 1:
                raise ConfigError(f"run.{name} must be >= 1, got {getattr(r, name)}")
        if not str(r.out_dir).strip():
            raise ConfigError("run.out_dir is empty; name the folder for the checkpoint and metrics, e.g. "
                              "run.out_dir=runs/my_run")
        if r.threads is not None and r.threads < 1:
            raise ConfigError(f"run.threads must be >= 1 (or null for torch's default), got {r.threads}")
        check_device_name(r.device, "run.device")
        return self


def check_device_name(name: str, what: str = "run.device") -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked by syntax only (availability is
    checked where the device is used, :func:`kernelattn.training.engine.resolve_device`)."""
    kind, _, index = str(name).partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"{what}={name!r}: choose auto, cpu, cuda, cuda:N or mps")
    return name


_SECTIONS = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "run": RunSection}


def _coerce(value, tp, name: str):
    """Convert a YAML/CLI value to the field's annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], name)
    if tp is dict or origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if tp is str:
        if value is None:  # `run.out_dir=` would otherwise become the folder "None"
            raise ConfigError(f"{name} needs a value, got nothing (write {name}=VALUE)")
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return str(value)
    return value


def _set(cfg: TrainConfig, dotted: str, value) -> None:
    parts = dotted.split(".")
    if len(parts) == 3 and parts[0] == "data" and parts[1] == "options":
        cfg.data.options[parts[2]] = yaml.safe_load(value) if isinstance(value, str) else value
        return
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise ConfigError(f"unknown config field {dotted!r}; fields look like model.n_layer or optim.lr "
                          f"(sections: {', '.join(_SECTIONS)})")
    section = getattr(cfg, parts[0])
    hints = typing.get_type_hints(type(section))
    if parts[1] not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(section))
        raise ConfigError(f"unknown config field {dotted!r}; {parts[0]} has: {known}")
    setattr(section, parts[1], _coerce(value, hints[parts[1]], dotted))


def config_from_dict(d: dict | None) -> TrainConfig:
    """Build a config from a nested mapping (as read from YAML); unknown keys are errors."""
    cfg = TrainConfig()
    for sec, body in (d or {}).items():
        if sec not in _SECTIONS:
            raise ConfigError(f"unknown config section {sec!r}; sections: {', '.join(_SECTIONS)}")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"config section {sec!r} must be a mapping")
        for k, v in body.items():
            _set(cfg, f"{sec}.{k}", v)
    return cfg


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.field=value`` strings (values parsed as YAML scalars)."""
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.field=value, e.g. optim.lr=3e-4")
        key, raw = ov.split("=", 1)
        _set(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return cfg


def builtin_configs() -> dict[str, Path]:
    """The configs shipped inside the package, by name (file stem): ``{"stories_mm": path, ...}``."""
    from importlib import resources

    folder = resources.files("kernelattn") / "configs"
    return {Path(f.name).stem: Path(str(f)) for f in sorted(folder.iterdir(), key=lambda f: f.name)
            if f.name.endswith(".yaml")}


def resolve_config_path(name: str | Path) -> Path:
    """A config given as a path (an existing file) or as a built-in name (``stories_mm``)."""
    p = Path(name)
    if p.is_file():
        return p
    builtin = builtin_configs()
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    if p.parent == Path(".") and stem in builtin:
        return builtin[stem]
    raise ConfigError(f"--config {str(name)!r}: no such file and no built-in config of that name "
                      f"(built-in: {', '.join(builtin) or 'none'}; `kernelattn configs` lists them)")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (a file path or a built-in name, optional), apply overrides, validate."""
    d = None
    if path is not None:
        p = resolve_config_path(path)
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections")
    cfg = config_from_dict(d)
    return apply_overrides(cfg, overrides or []).validate()


#: Fields a resumed run may change without ``force``: they do not change what is trained
#: (``optim.max_steps`` may grow; the schedule is then recomputed, see :func:`resume_config`).
RESUME_FREE_FIELDS = ("run.eval_interval", "run.eval_batches", "run.log_interval", "run.ckpt_interval",
                      "run.tensorboard", "run.progress", "run.threads", "run.device")


def _flat(d: dict) -> dict:
    return {f"{sec}.{k}": v for sec, body in d.items() for k, v in body.items()}


def _listing(changed: list[tuple[str, object, object]]) -> str:
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changed)


def trajectory_changes(saved: dict, now: dict) -> list[tuple[str, object, object]]:
    """The fields that differ between two configs (``to_dict()`` form) and change what is trained.

    Left out: :data:`RESUME_FREE_FIELDS`, ``run.out_dir`` (a run folder may be moved) and
    ``optim.max_steps`` (growing it extends the run; :func:`resume_config` handles it).
    ``model.vocab_size`` counts only when both sides name one (``None`` means "the data's").
    A field the saved config lacks was added to kernelattn after that run started; new
    fields default to the old behaviour, so it is not a change.

    Returns:
        ``[(field, saved value, new value), ...]`` in config order.
    """
    a, b = _flat(saved), _flat(now)
    out = []
    for key in b:
        if key in RESUME_FREE_FIELDS or key in ("run.out_dir", "optim.max_steps") or key not in a:
            continue
        if key == "model.vocab_size" and (a.get(key) is None or b[key] is None):
            continue
        if a.get(key) != b[key]:
            out.append((key, a.get(key), b[key]))
    return out


def resume_config(run_dir: str | Path, overrides: list[str] | None = None, force: bool = False,
                  step: int | None = None) -> tuple[TrainConfig, list[str]]:
    """The config to continue the run in ``run_dir``: the one saved there, plus ``overrides``.

    Allowed freely: the fields in :data:`RESUME_FREE_FIELDS`, and raising
    ``optim.max_steps``. Every other change (seed, data, batch, lr, method, ...) alters
    the trajectory and raises :class:`ConfigError` unless ``force``.

    Args:
        run_dir: a folder written by ``kernelattn train`` (holds ``config.json``).
        overrides: ``section.field=value`` strings.
        force: allow trajectory changes (they are still listed in the notes).
        step: the checkpoint's step, if any (``optim.max_steps`` may not go below it).

    Returns:
        The validated config (``run.out_dir`` is ``run_dir``) and notes to print, one per change.
    """
    import json

    run_dir = Path(run_dir)
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        what = "does not exist" if not run_dir.exists() else "holds no run (no config.json)"
        raise ConfigError(f"--resume {str(run_dir)!r}: {what}; start a run with `kernelattn train --config ...`")
    try:
        raw = json.loads(saved_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"--resume {str(run_dir)!r}: config.json is not valid JSON ({e}); restore it, or start "
                          f"afresh with --config ... --overwrite") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--resume {str(run_dir)!r}: config.json holds a {type(raw).__name__}, not a config "
                          f"mapping; restore it, or start afresh with --config ... --overwrite")
    saved = config_from_dict(raw)
    saved.run.out_dir = str(run_dir)
    saved_dict = saved.to_dict()
    before = _flat(saved_dict)
    for ov in overrides or []:
        if ov.split("=", 1)[0].strip() == "run.out_dir":
            raise ConfigError(f"run.out_dir cannot be changed with --resume: the run lives in {str(run_dir)!r}")
    cfg = apply_overrides(saved, overrides or []).validate()
    after = _flat(cfg.to_dict())
    notes = []
    old, new = before["optim.max_steps"], after["optim.max_steps"]
    if step is not None and new < step:
        raise ConfigError(f"optim.max_steps={new} is below the checkpoint's step {step} in {str(run_dir)!r}")
    if new > old:
        from .optim import cosine_lr

        o, at = cfg.optim, step or 0
        lr_old = cosine_lr(min(at, old), o.lr, o.min_lr, o.warmup_steps, old)
        lr_new = cosine_lr(at, o.lr, o.min_lr, o.warmup_steps, new)
        notes.append(f"extending optim.max_steps {old} -> {new}: the cosine schedule now runs to step {new}, "
                     f"so the learning rate at step {at} is {lr_new:.3g} (was {lr_old:.3g})")
    changed = trajectory_changes(saved_dict, cfg.to_dict())
    if new < old:  # shortening changes the cosine schedule of the steps still to come
        changed.append(("optim.max_steps", old, new))
    if changed and not force:
        raise ConfigError(f"resuming {str(run_dir)!r} would change the run: {_listing(changed)}; a resumed run "
                          f"continues the same trajectory, so drop the override(s), or add --allow-changes "
                          f"(alias --force)")
    for key, old, new in changed:
        notes.append(f"--allow-changes: {key} changed {old!r} -> {new!r}; the run is no longer one uninterrupted run")
    return cfg, notes
