"""Plain materialised reference attention in float64: our mappings on the full score matrix."""

import math

import torch

from kernelattn.mappings import entmax, resolve_mapping


def admissible(Lq, Lk, causal_offset=None, mask=None):
    """Bool (…, Lq, Lk): True where a query may attend to a key."""
    ok = torch.ones(Lq, Lk, dtype=torch.bool)
    if causal_offset is not None:
        ok = ok.tril(diagonal=causal_offset)
    if mask is not None and mask.dtype == torch.bool:
        ok = ok & mask
    return ok


def attention_ref(q, k, v, method="entmax15", *, mask=None, causal_offset=None, score_scale=None, alpha=None,
                  return_p=False, **options):
    """Reference output (and weights) of kernel attention, computed the obvious way.

    q (B, Hq, Lq, E), k/v (B, Hkv, Lk, ·); mask bool (True = attend) or float (added).
    """
    q, k, v = q.double(), k.double(), v.double()
    G = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(G, dim=1)
    v = v.repeat_interleave(G, dim=1)
    scale = 1 / math.sqrt(q.shape[-1]) if score_scale is None else score_scale
    s = scale * q @ k.transpose(-1, -2)
    if mask is not None and mask.dtype != torch.bool:
        s = s + mask.double()
    ok = admissible(q.shape[-2], k.shape[-2], causal_offset, mask)
    s = s.masked_fill(~ok, -math.inf)
    if alpha is not None:
        p = entmax(s, alpha, dim=-1)
    else:
        p = resolve_mapping(method, **options)(s, -1)
    out = p @ v
    return (out, p) if return_p else out
