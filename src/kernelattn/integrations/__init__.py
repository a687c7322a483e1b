"""Bridges to other libraries' models. Each bridge is an optional extra, imported on demand.

``kernelattn.integrations.hf``: Hugging Face ``transformers`` (``pip install 'kernelattn[hf]'``).
"""
