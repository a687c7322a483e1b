"""Train a small transformers Llama with softmax, 1.5-entmax and learned-α entmax attention.

The model is built from a config (nothing is downloaded) and trained on kernelattn's
built-in story corpus (byte-level, character names recalled from context). The three
runs start from the same initial weights and see the same batches; the only change is
one line, the attention implementation:

    kh.sparsify(model, method="entmax15", learn_alpha=True)

At the end it prints validation losses, the learned α per layer and head, and the mean
support size (keys with non-zero weight per query) per head, and saves the loss curves.

    python examples/hf_finetune.py                     # about 2-4 minutes on 2 CPU cores
    python examples/hf_finetune.py --steps 1000 --out runs/hf_finetune
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from tqdm import tqdm

import kernelattn.integrations.hf as kh
from kernelattn.data import TextCorpus, generate_stories, step_generator

RUNS = {  # label -> sparsify arguments (None = transformers' own sdpa softmax)
    "softmax (sdpa)": None,
    "entmax15": dict(method="entmax15"),
    "entmax15, learned α": dict(method="entmax15", learn_alpha=True),
}


def build_model(args, run: dict | None):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.heads // 2, intermediate_size=4 * args.hidden,
                      vocab_size=TextCorpus.vocab_size, max_position_embeddings=args.seq_len)
    torch.manual_seed(args.seed)  # same initial weights for every run
    model = LlamaForCausalLM(cfg)
    if run is not None:
        kh.sparsify(model, **run)
    return model


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # Decay matrices only; α (a per-head scalar) and norms are not regularised towards 0.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


@torch.no_grad()
def val_loss(model, corpus: TextCorpus, args) -> float:
    model.eval()
    losses = []
    for i in range(args.val_batches):
        x, y = corpus.sample("val", args.batch, step_generator(args.seed, "val", i))
        losses.append(model(input_ids=x, labels=x).loss.item())
    model.train()
    return sum(losses) / len(losses)


@torch.no_grad()
def support_sizes(model, corpus: TextCorpus, args) -> torch.Tensor:
    """Mean number of keys with non-zero weight per query: ``(layers, heads)``."""
    impl = model.config._attn_implementation
    if not impl.startswith(kh.PREFIX):  # sdpa returns no weights: the same softmax through kernelattn does
        model.set_attn_implementation("kernelattn_softmax")
    model.eval()
    x, _ = corpus.sample("val", 4, step_generator(args.seed, "support", 0))
    attentions = model(input_ids=x, output_attentions=True).attentions  # per layer (B, H, T, T)
    model.train()
    model.set_attn_implementation(impl)
    return torch.stack([(a > 0).sum(-1).float().mean(dim=(0, 2)) for a in attentions])


def train(label: str, run: dict | None, corpus: TextCorpus, args) -> dict:
    model = build_model(args, run)
    model.train()
    opt = make_optimizer(model, args.lr, args.weight_decay)
    warmup = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    curve = []
    bar = tqdm(range(args.steps), desc=f"{label:>20}", leave=True)
    for step in bar:
        x, _ = corpus.sample("train", args.batch, step_generator(args.seed, "train", step))  # same batches per run
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        curve.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return {"model": model, "curve": curve, "val": val_loss(model, corpus, args),
            "support": support_sizes(model, corpus, args)}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, r in results.items():
        c = torch.tensor(r["curve"])
        k = max(1, len(c) // 50)  # moving average over ~2% of the run
        smooth = torch.nn.functional.avg_pool1d(c[None, None], k, stride=1)[0, 0] if k > 1 else c
        ax.plot(range(k - 1, len(c)), smooth.tolist(), label=f"{label} (val {r['val']:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (nats/byte)")
    ax.set_title("tiny Llama on kernelattn's stories corpus")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--val-batches", type=int, default=8)
    ap.add_argument("--stories", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest for a model this small")
    ap.add_argument("--out", type=Path, default=Path("runs/hf_finetune"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kh.register()
    corpus = TextCorpus(generate_stories(args.stories, seed=args.seed), seq_len=args.seq_len)

    results = {label: train(label, run, corpus, args) for label, run in RUNS.items()}

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "loss.png"
    plot(results, png)
    print(f"\nvalidation loss after {args.steps} steps (nats/byte):")
    for label, r in results.items():
        print(f"  {label:<22} {r['val']:.4f}")
    print("\nmean support size per head (keys with non-zero weight per query; causal, T = "
          f"{args.seq_len}, so softmax uses all (T+1)/2 = {(args.seq_len + 1) / 2:.1f} on average):")
    for label, r in results.items():
        for layer, row in enumerate(r["support"].tolist()):
            print(f"  {label:<22} layer {layer}: " + "  ".join(f"{s:5.1f}" for s in row))
    learned = results["entmax15, learned α"]["model"]
    print("\nlearned α per head (initialised at 1.5; 1 = softmax, 2 = sparsemax):")
    for name, a in kh.alphas(learned).items():
        print(f"  {name:<26} " + "  ".join(f"{v:.3f}" for v in a.tolist()))
    print(f"\nloss curves: {png}")


if __name__ == "__main__":
    main()
