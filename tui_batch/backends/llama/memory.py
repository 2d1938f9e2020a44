"""How many slots' KV cache a machine can hold: the cap on automatic `--parallel` on
the CPU, where the cache lives in the machine's memory."""

from __future__ import annotations

import os
from typing import Any

# Automatic parallel holds back where the slots' KV cache would take more than this
# share of the machine's memory (a 7B model's is 0.1 to 1 GiB a slot at 2048 tokens).
KV_SHARE_OF_MEMORY = 0.25


def kv_bytes_per_cell(llama_cpp: Any, model: Any) -> int:
    """One token's KV cache: K and V, 16 bits each, for every layer's KV heads."""
    head_size = llama_cpp.llama_model_n_embd(model) // max(1, llama_cpp.llama_model_n_head(model))
    layers, kv_heads = llama_cpp.llama_model_n_layer(model), llama_cpp.llama_model_n_head_kv(model)
    return 2 * 2 * layers * kv_heads * head_size


def physical_memory() -> int | None:
    """The machine's memory in bytes, where the platform says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def slots_that_fit(bytes_per_slot: int, wanted: int, memory: int | None) -> int:
    """At most `wanted` slots (and the shared prefix's sequence), their KV cache within
    KV_SHARE_OF_MEMORY of `memory`; at least one."""
    if not memory or bytes_per_slot <= 0:
        return wanted
    return max(1, min(wanted, int(memory * KV_SHARE_OF_MEMORY) // bytes_per_slot - 1))
