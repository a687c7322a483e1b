"""Queries, keys and values from a trained Memory Mosaics model: the supports real models have.

Random unit-variance q, k give one score distribution; a trained model gives another
(keys that are leaky averages over time, learnt bandwidths β_h). This module trains a
small Memory Mosaics model on the built-in stories once (about a minute or two on 2 CPU
cores; cached under ``runs/bench/``), then captures the first layer's context-memory
call — exactly the ``(q, k, v)`` that the model hands to ``kernel_attention`` — on a
story text of any length (the model has no positional embedding, so any length works).

    q, k, v, scale = trained_qkv(4096)      # (1, 4, T, 64) each, scale for kernel_attention
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from kernelattn.data.stories import generate_stories
from kernelattn.models import MemoryMosaics, MemoryMosaicsConfig
from kernelattn.models import memory_mosaics as mm_module

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "runs" / "bench" / "mm_entmax15_h4_d64.pt"
CONFIG = dict(vocab_size=256, n_layer=2, n_head=4, n_embd=256, block_size=256, method="entmax15")
TRAIN_STEPS, BATCH, LR = 150, 8, 3e-3


def _tokens(n_bytes: int, seed: int) -> torch.Tensor:
    n_stories = max(1, n_bytes // 600 + 1)
    data = generate_stories(n_stories, seed=seed).encode()
    while len(data) < n_bytes:
        seed += 1
        data += b"\n\n" + generate_stories(n_stories, seed=seed).encode()
    return torch.tensor(list(data[:n_bytes]), dtype=torch.long)


def train_checkpoint(path: Path = CKPT, steps: int = TRAIN_STEPS, log=print) -> dict:
    """Train the benchmark's Memory Mosaics model (1.5-entmax) and save its weights."""
    torch.manual_seed(0)
    model = MemoryMosaics(MemoryMosaicsConfig(**CONFIG))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)
    data = _tokens(2_000_000, seed=1)
    T = CONFIG["block_size"]
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(steps):
        lr = LR * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(data) - T - 1, (BATCH,), generator=g)
        batch = torch.stack([data[s:s + T + 1] for s in starts.tolist()])
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"  [trained model] step {step:4d}  loss {loss.item():.3f}  ({time.time() - t0:.0f} s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"config": CONFIG, "steps": steps, "final_loss": loss.item(), "model": model.state_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return state


class _Captured(Exception):
    pass


def trained_qkv(length: int, layer: int = 0, seed: int = 7, path: Path = CKPT, log=print):
    """``(q, k, v, scale)`` of the trained model's context memory ``layer`` on ``length`` tokens.

    ``q`` ``(1, H, length, hd)`` are the queries of positions 1..length, ``k``/``v`` the keys
    and values of positions 0..length-1 (the strict-past framing the model uses), so
    ``kernel_attention(q, k, v, is_causal=True, scale=scale)`` is the model's own call.
    """
    if not path.exists():
        log(f"training the benchmark's Memory Mosaics model ({TRAIN_STEPS} steps) -> {path}")
        train_checkpoint(path, log=log)
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = MemoryMosaicsConfig(**{**state["config"], "block_size": length + 1})
    model = MemoryMosaics(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    idx = _tokens(length + 1, seed=seed).unsqueeze(0)
    captured = {}
    calls = [0]
    real = mm_module.kernel_attention

    def capture(q, k, v, **kw):
        if calls[0] == layer:
            captured.update(q=q, k=k, v=v, scale=kw.get("scale"))
            raise _Captured
        calls[0] += 1
        return real(q, k, v, **kw)

    mm_module.kernel_attention = capture
    try:
        with torch.no_grad():
            model(idx)
    except _Captured:
        pass
    finally:
        mm_module.kernel_attention = real
    return (captured["q"].contiguous(), captured["k"].contiguous(), captured["v"].contiguous(),
            float(captured["scale"]))
