"""In-process llama.cpp (llama-cpp-python), the only part of tui-batch that imports it:
`loading` (the library and models, quietly), `sequential` (one prompt at a time),
`parallel` (the continuous-batching loop) and its parts: `slot` (a prompt in flight,
what a token does to its answer), `kv_reuse` (where a new prompt's KV cells come from),
`step` (a decode's batch, greedy argmax, timing), `device_greedy` (greedy on the GPU, an
experiment), `answer` (an answer's text and stop strings), `chat` (chat template and
sampler chain), `memory` (how many slots fit), `tokens` (a prompt's length as the run
counts it), `constraint` (a schema enforced on the logits)."""

import contextlib

# llama.cpp's library is loaded before numpy (which every module here imports): on a CUDA
# build, numpy loaded first made llama.cpp's first model load crash (seen on an H200;
# importing llama_cpp first, as this does, loads fine). A missing llama_cpp is said when a
# model is needed (`loading.import_llama_cpp`).
with contextlib.suppress(ImportError):
    import llama_cpp  # noqa: F401
