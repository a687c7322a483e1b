"""The training loop: one readable story from config to checkpoints.

Data are drawn per step from generators seeded by ``(seed, split, step, micro)``
(:mod:`kernelattn.data.base`), so a checkpoint's step counter is its data position,
resuming replays the exact batches, and each ``torchrun`` process takes its own rows of
the same global batch. The loss is a sum over tokens divided by the *global* count of
target tokens, so a data-parallel run computes the same gradient as one process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from ..data import IGNORE, BatchSource, TextCorpus, generate_stories, read_corpus, step_generator
from ..models import build_model
from ..models.memory_mosaics import MEMORY_MOSAICS_ONLY
from .checkpoint import REQUIRED_KEYS, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ConfigError, TrainConfig, check_device_name, trajectory_changes
from .distributed import DistInfo, init_distributed
from .lock import RunLock
from .optim import cosine_lr, make_optimizer

__all__ = ["Trainer", "build_source", "resolve_device", "holds_run", "refuse_overwrite", "TrainingDiverged",
           "prepare_out_dir"]


class TrainingDiverged(FloatingPointError):
    """The loss or the gradient became NaN/inf; the last checkpoint (finite weights) is kept."""


def prepare_out_dir(out_dir: str | Path, what: str = "run.out_dir") -> Path:
    """Create ``out_dir`` and check that files can be written in it, or raise :class:`ConfigError`.

    Checked before training so an unwritable folder fails at once, not at the first
    checkpoint minutes later.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{what}={str(out_dir)!r} cannot be created or written ({e.strerror or e}); choose "
                          f"a writable folder") from None
    return out_dir


def holds_run(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` already holds a training run (a saved config or a checkpoint)."""
    out_dir = Path(out_dir)
    return (out_dir / "config.json").exists() or (out_dir / "ckpt.pt").exists()


def refuse_overwrite(out_dir: str | Path) -> ConfigError:
    """The error for starting a run where one already is."""
    return ConfigError(f"run.out_dir={str(out_dir)!r} already holds a run; continue it with `kernelattn train "
                       f"--resume {out_dir}`, or start afresh with --overwrite or another run.out_dir")


def build_source(cfg: TrainConfig) -> BatchSource:
    """The data source a config names: built-in stories, a text corpus, or a task."""
    d = cfg.data
    if d.source == "stories":
        return TextCorpus(generate_stories(d.n_stories, seed=cfg.run.seed), d.seq_len)
    if d.source == "text":
        return TextCorpus(read_corpus(d.path, d.text_field), d.seq_len)
    try:
        from ..tasks import TASKS, build_task
    except ImportError:  # pragma: no cover - tasks ship with the package
        TASKS, build_task = (), None
    if build_task is None or d.source not in TASKS:
        raise ConfigError(f"data.source={d.source!r}: choose stories, text or a task ({', '.join(TASKS)})")
    try:
        return build_task(d.source, seq_len=d.seq_len, seed=cfg.run.seed, **d.options)
    except (TypeError, ValueError) as e:  # a bad data.options entry: name the section it came from
        raise ConfigError(f"data.options for data.source={d.source}: {e}") from None


def resolve_device(name: str, what: str = "run.device") -> torch.device:
    """The device a config names, after checking that this machine has it (:class:`ConfigError` if not)."""
    check_device_name(name, what)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what}={name!r} but CUDA is not available; use {what}=cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{what}={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{what}={name!r} but MPS is not available; use {what}=cpu (or auto)")
    return dev


class _MetricsLog:
    """JSON lines (and TensorBoard when asked for and installed), written by rank 0."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.path = out_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # drop records from steps after the checkpoint: they will be redone
            keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        elif self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                print("run.tensorboard=true but the tensorboard package is not installed; logging JSON lines only")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """Train a model described by a :class:`TrainConfig`.

    Args:
        cfg: a validated config.
        source: optional data source (default: :func:`build_source`).
    """

    def __init__(self, cfg: TrainConfig, source: BatchSource | None = None):
        self.cfg = cfg.validate()
        r = cfg.run
        if r.threads is not None:
            torch.set_num_threads(r.threads)
        self.device = resolve_device(r.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.source = source if source is not None else build_source(cfg)
        if self.source.seq_len > cfg.model.block_size:
            raise ConfigError(f"the data's sequence length {self.source.seq_len} is larger than "
                              f"model.block_size={cfg.model.block_size} allows")
        per_step = cfg.optim.batch_size // cfg.optim.grad_accum
        if per_step % self.dist.world_size:
            raise ConfigError(f"optim.batch_size/optim.grad_accum={per_step} must be divisible by the "
                              f"number of processes ({self.dist.world_size})")
        self.out_dir = Path(r.out_dir)
        self.ckpt_path = self.out_dir / "ckpt.pt"
        torch.manual_seed(r.seed)  # identical initial weights on every process
        m = asdict(cfg.model)
        arch = m.pop("arch")
        m["vocab_size"] = m["vocab_size"] or self.source.vocab_size
        if arch == "memory_mosaics":
            m.pop("n_kv_head")
        else:
            for name in MEMORY_MOSAICS_ONLY:
                m.pop(name)
        self.model = build_model(arch, **m).to(self.device)
        o = cfg.optim
        self.optimizer = make_optimizer(self.model, o.lr, o.weight_decay, (o.beta1, o.beta2), self.device.type)
        self.amp_dtype = self._amp_dtype(r.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step = 0
        self.last_metrics: dict = {}  # the latest logged values, kept in checkpoints

    def _amp_dtype(self, amp: str):
        if amp == "off":
            return None
        if amp == "auto":
            if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
                return torch.bfloat16
            return None
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None, "step": self.step,
                "rng": rng_state(), "config": self.cfg.to_dict(), "world_size": self.dist.world_size,
                "last_metrics": dict(self.last_metrics)}

    def save(self) -> None:
        if self.dist.is_main:
            bad = next((n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()), None)
            if bad is not None:  # never replace the last good checkpoint with NaN weights
                raise TrainingDiverged(f"training diverged: weight {bad} is NaN/inf after step {self.step}; "
                                       f"{self._kept()}")
            save_checkpoint(self.ckpt_path, self.state_dict())
        if self.dist.enabled:
            dist.barrier()

    def load(self, force: bool = False) -> None:
        """Restore model, optimiser, RNG and step from ``ckpt.pt``.

        Args:
            force: accept a checkpoint whose model config differs (e.g. another method),
                as long as its weights fit the model.
        """
        st = load_checkpoint(self.ckpt_path, map_location=self.device, required=REQUIRED_KEYS)
        # The checkpoint's own config is the truth about its trajectory (config.json may have
        # been edited; `reproduce` resumes without reading config.json at all).
        diff = trajectory_changes(st["config"], self.cfg.to_dict()) if isinstance(st["config"], dict) else []
        if diff and not force:
            listing = ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in diff)
            raise ConfigError(f"cannot resume {str(self.ckpt_path)!r}: the config differs from the one it was "
                              f"trained with ({listing}); restore the config, start afresh with --overwrite "
                              f"(or another run.out_dir), or resume anyway with --allow-changes")
        if st["step"] > self.cfg.optim.max_steps:
            raise ConfigError(f"cannot resume {self.ckpt_path}: it is at step {st['step']}, beyond "
                              f"optim.max_steps={self.cfg.optim.max_steps}")
        try:
            self.model.load_state_dict(st["model"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ConfigError(f"cannot resume {self.ckpt_path}: its weights do not fit this model ({first})") from None
        self.optimizer.load_state_dict(st["optimizer"])
        if self.scaler and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.step = st["step"]
        self.last_metrics = dict(st.get("last_metrics", {}))
        set_rng_state(st["rng"])

    def _kept(self) -> str:
        """Where the last good state is, and what to try, for a divergence message."""
        o = self.cfg.optim
        hint = (f"lower optim.lr (now {o.lr:g})" + ("" if o.grad_clip > 0 else " or set optim.grad_clip=1.0")
                + (" or run.amp=bf16/off" if self.amp_dtype == torch.float16 else ""))
        if self.ckpt_path.is_file():
            return (f"the last good checkpoint ({self.ckpt_path}) is kept; {hint} and continue with `kernelattn "
                    f"train --resume {self.out_dir} optim.lr=... --allow-changes`, or start afresh")
        return f"no checkpoint was written yet; {hint} and start again with --overwrite"

    # -- data --------------------------------------------------------------------------
    def _micro_batches(self, split: str, step: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
        """This process's rows of each micro-batch, and the global target-token count of the step.

        The step's whole batch is drawn at once and cut into ``grad_accum`` micro-batches,
        each split across processes, so accumulation and data parallelism both compute
        the gradient of the same batch.
        """
        o, W, rk = self.cfg.optim, self.dist.world_size, self.dist.rank
        x, y = self.source.sample(split, o.batch_size, step_generator(self.cfg.run.seed, split, step))
        n_tok = max(int((y != IGNORE).sum()), 1)
        per = o.batch_size // o.grad_accum
        shards = []
        for micro in range(o.grad_accum):
            lo = micro * per
            rows = slice(lo + rk * per // W, lo + (rk + 1) * per // W)
            shards.append((x[rows].to(self.device), y[rows].to(self.device)))
        return shards, n_tok

    # -- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean validation loss over ``run.eval_batches`` fixed batches, plus task metrics."""
        model = self.model
        model.eval()
        tot, n = 0.0, 0
        for i in range(self.cfg.run.eval_batches):
            x, y = self.source.sample("val", self.cfg.optim.batch_size // self.cfg.optim.grad_accum,
                                      step_generator(self.cfg.run.seed, "val", i))
            x, y = x.to(self.device), y.to(self.device)
            with self._autocast():
                logits = model(x)
            tot += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum").item()
            n += int((y != IGNORE).sum())
        out = {"val_loss": tot / max(n, 1)}
        if hasattr(self.source, "evaluate"):
            out.update(self.source.evaluate(model, self.device))
        model.train()
        return out

    # -- the loop ----------------------------------------------------------------------
    def train(self, resume: bool = False, stop_at: int | None = None, overwrite: bool = False,
              force: bool = False) -> dict:
        """Run to ``optim.max_steps`` (or ``stop_at``, leaving a checkpoint, as a crash would).

        Args:
            resume: continue from ``run.out_dir/ckpt.pt`` when there is one.
            stop_at: stop after this step (the checkpoint is written, as at an interruption).
            overwrite: without ``resume``, start afresh even if ``run.out_dir`` holds a run
                (otherwise that raises :class:`ConfigError`: a run is never lost silently).
            force: with ``resume``, accept a checkpoint whose model config differs.

        Returns:
            The last logged metrics (``train_loss``, ``val_loss``, task metrics, ``step``).
        """
        cfg, r = self.cfg, self.cfg.run
        lock = None
        if self.dist.is_main:
            prepare_out_dir(self.out_dir)
            try:
                lock = RunLock(self.out_dir, "run.out_dir").acquire()
            except OSError as e:
                raise ConfigError(f"run.out_dir={str(self.out_dir)!r}: cannot create its lock file ({e.strerror or e})"
                                  ) from None
        try:
            return self._train(resume, stop_at, overwrite, force)
        finally:
            if lock is not None:
                lock.release()

    def _train(self, resume: bool, stop_at: int | None, overwrite: bool, force: bool) -> dict:
        cfg, o, r = self.cfg, self.cfg.optim, self.cfg.run
        exists = holds_run(self.out_dir)
        if self.dist.enabled:
            dist.barrier()  # every process has looked before rank 0 writes config.json
        if not resume and exists and not overwrite:
            raise refuse_overwrite(self.out_dir)
        if resume:
            if self.ckpt_path.exists():
                self.load(force=force)
        elif exists and self.dist.is_main and self.ckpt_path.exists():
            # --overwrite: a later --resume must not pick up the old run's weights
            if self.ckpt_path.is_dir() and not self.ckpt_path.is_symlink():
                shutil.rmtree(self.ckpt_path)
            else:
                self.ckpt_path.unlink()
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log = _MetricsLog(self.out_dir, self.dist.is_main, r.tensorboard, self.step if resume else None)
        model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if self.dist.enabled else self.model
        model.train()
        end = o.max_steps if stop_at is None else min(stop_at, o.max_steps)
        bar = tqdm(total=o.max_steps, initial=self.step, disable=not (self.dist.is_main and r.progress),
                   desc=f"{cfg.model.arch}/{cfg.model.method}", dynamic_ncols=True, leave=False)
        last = self.last_metrics
        tokens_seen, t_last = 0, time.perf_counter()
        while self.step < end:
            step = self.step
            lr = cosine_lr(step, o.lr, o.min_lr, o.warmup_steps, o.max_steps)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            shards, n_tok = self._micro_batches("train", step)
            loss_sum = torch.zeros((), device=self.device)
            for i, (x, y) in enumerate(shards):
                sync = i == len(shards) - 1 or not self.dist.enabled
                ctx = contextlib.nullcontext() if sync else model.no_sync()
                with ctx:
                    with self._autocast():
                        logits = model(x)  # (b, T, vocab)
                    ls = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                         ignore_index=IGNORE, reduction="sum")
                    # DDP averages over processes: scale so the result is the global token mean
                    loss = ls * (self.dist.world_size / n_tok)
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
                loss_sum += ls.detach()
                tokens_seen += x.numel()
            if self.dist.enabled:
                dist.all_reduce(loss_sum)
            train_loss = loss_sum.item() / n_tok
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip if o.grad_clip > 0 else math.inf)
            # Stop before the update: a NaN/inf loss (or gradient, without fp16's scaler, which
            # skips such steps itself) would make every weight NaN. The checkpoint on disk is
            # from an earlier, finite step and stays.
            if not math.isfinite(train_loss) or (self.scaler is None and not torch.isfinite(gnorm)):
                what = f"loss became {train_loss}" if not math.isfinite(train_loss) else \
                    f"gradient norm became {float(gnorm)}"
                raise TrainingDiverged(f"training diverged: the {what} at step {step + 1}; {self._kept()}")
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            bar.update(1)
            record = {"step": self.step, "train_loss": train_loss, "lr": lr, "grad_norm": float(gnorm)}
            if self.step % r.log_interval == 0 or self.step == end:
                now = time.perf_counter()
                record["tokens_per_s"] = tokens_seen * self.dist.world_size / max(now - t_last, 1e-9)
                tokens_seen, t_last = 0, now
                bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if self.step % r.eval_interval == 0 or self.step == o.max_steps:
                record.update(self.evaluate())
            if self.step % r.log_interval == 0 or "val_loss" in record or self.step == end:
                log.log(record)
            last.update(record)
            if self.step % r.ckpt_interval == 0 or self.step == end:
                self.save()
        bar.close()
        log.close()
        return last
