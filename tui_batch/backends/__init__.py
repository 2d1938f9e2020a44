"""Backends turn prompts into responses (the protocol is `tui_batch.core.backend`).

`llama_cpp` is imported only when used; `factory` makes the backend a job needs.
"""
