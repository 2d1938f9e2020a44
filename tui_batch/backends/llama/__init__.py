"""In-process llama.cpp (llama-cpp-python), the only part of tui-batch that imports it:
`loading` (the library and models, quietly), `sequential` (one prompt at a time),
`parallel` (the continuous-batching loop) and its parts: `step` (a decode's batch,
greedy argmax, timing), `answer` (an answer's text and stop strings), `chat` (chat
template and sampler chain), `memory` (how many slots fit), `tokens` (a prompt's length
as the run counts it)."""
