"""Kernel attention inside Hugging Face ``transformers`` models, in one line.

::

    import kernelattn.integrations.hf as kh
    kh.register()   # "kernelattn_<method>" for every method, e.g. kernelattn_entmax15
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="kernelattn_entmax15")
    model = kh.sparsify(model, method="entmax15", learn_alpha=True)   # in place on a loaded model

Every model whose attention goes through ``transformers``' ``AttentionInterface`` works:
causal LMs and encoders, grouped-query attention, the masks ``transformers`` builds
(causal, left/right padding, packed sequences, sliding windows; ``sdpa``'s boolean format),
``scaling``, ``output_attentions=True`` (the sparse weights, materialised), and
``generate`` with the KV cache (single-query steps go through
:func:`kernelattn.kernel_attention_step`). Learned α per layer and head are parameters
of the model (:mod:`.alpha`).
"""

try:
    import transformers  # noqa: F401
    from transformers import AttentionInterface  # noqa: F401
    from transformers.masking_utils import AttentionMaskInterface  # noqa: F401
except ImportError:
    raise ImportError("kernelattn.integrations.hf needs Hugging Face transformers (with AttentionInterface and "
                      "AttentionMaskInterface): pip install 'kernelattn[hf]'") from None

from .alpha import ALPHA_PARAM, alphas, attention_modules
from .api import implementation_name, register, sparsify
from .attention import PREFIX, attention_weights, decode_attention, prefill_attention

__all__ = ["register", "sparsify", "alphas", "implementation_name", "attention_modules", "decode_attention",
           "prefill_attention", "attention_weights", "ALPHA_PARAM", "PREFIX"]
