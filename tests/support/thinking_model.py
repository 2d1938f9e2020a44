"""A model that thinks, for tests: no small reasoning GGUF ships in a package, so one is
made from the demo model. Its unused control ids 3 and 4 become `<think>` and `</think>`,
user-defined tokens as in Qwen3's vocabulary, and its chat template a Qwen3-style one
with the `enable_thinking` switch; no weight changes. The model does not think by
itself: a template that opens the thought in the prompt makes it think, and a reasoning
budget closes the thought after a known number of tokens, through the real decode loop.

Also: the real templates of the llama-cpp-python sdist (`vendor/llama.cpp/models/
templates`), where `TUI_BATCH_LLAMA_TEMPLATES` names their folder (`.ci/run` fills it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest

from tui_batch.models.catalog import demo_model_path

USER_DEFINED = 4
# Ids whose trained embeddings read as "Let" and "Answer": the model goes on writing
# after them as after those words (ids of control tokens it never saw made it stop).
THINK, END_THINK = 4239, 21350

# Qwen3's switch over SmolLM2's ChatML. `opens`: the generation prompt opens the thought
# (as Qwen3.5's and the R1 distills' do), so the model is inside it from its first token.
QWEN_STYLE = """{%- for message in messages -%}
<|im_start|>{{ message.role }}
{% if message.role == 'assistant' and message.reasoning_content -%}
<think>{{ message.reasoning_content }}</think>
{% endif -%}
{{ message.content }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false -%}
<think></think>
{% elif opens -%}
<think>
{%- endif -%}
{%- endif -%}"""


# gpt-oss's channels over SmolLM2: the thought in the analysis channel, the answer in the
# final one, the markers control tokens (which plain detokenized text leaves out). The
# prompt opens the analysis channel, so the model is inside the thought from the start.
# With `<|return|>` and `<|call|>` in the vocabulary, llama.cpp takes `<|end|>` out of the
# ends of generation, as for gpt-oss (else the close of the thought would end it).
CHANNELS = (5, 6, 7, 8, 9, 10)  # control ids the demo model never uses, renamed below
CHANNEL_NAMES = ("<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|return|>", "<|call|>")
CHANNEL_STYLE = """{%- for message in messages -%}
<|start|>{{ message.role }}
{%- if message.role == 'assistant' and message.thinking -%}
<|channel|>analysis<|message|>{{ message.thinking }}<|end|><|start|>assistant<|channel|>final<|message|>
{%- else -%}
<|message|>
{%- endif -%}
{{ message.content }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}
<|start|>assistant<|channel|>analysis<|message|>
{%- endif -%}"""


def template(opens: bool) -> str:
    return QWEN_STYLE.replace(
        "{% elif opens -%}", "{% elif true -%}" if opens else "{% elif false -%}"
    )


def make_thinking_model(folder: Path, opens: bool = True, channels: bool = False) -> Path:
    """The demo model as a thinking model, written once into `folder` (`channels`: with
    gpt-oss-style channels of control tokens, else `<think>` tags)."""
    style = "channels" if channels else "open" if opens else "plain"

    def tokens(name: str, value: list) -> list:
        if name == gguf.Keys.Tokenizer.LIST:
            if channels:
                for token, text in zip(CHANNELS, CHANNEL_NAMES, strict=True):
                    value[token] = text
            else:
                value[THINK], value[END_THINK] = "<think>", "</think>"
        elif name == gguf.Keys.Tokenizer.TOKEN_TYPE and not channels:  # those are control
            value[THINK] = value[END_THINK] = USER_DEFINED
        return value

    chat = CHANNEL_STYLE if channels else template(opens)
    return demo_with_template(folder / f"thinking-{style}.gguf", chat, tokens)


def demo_with_template(
    path: Path, chat_template: str, tokens: Callable[[str, list], list] | None = None
) -> Path:
    """The demo model's weights written once to `path` as a model of its own, with this
    chat template (and its vocabulary's lists changed by `tokens(name, values)`)."""
    if path.exists():
        return path
    source = demo_model_path()
    assert source is not None, "the demo model is not installed"
    reader = gguf.GGUFReader(source)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(path, arch)
    for field in reader.fields.values():
        name = field.name
        if name == gguf.Keys.General.ARCHITECTURE or name.startswith("GGUF."):
            continue
        if name == gguf.Keys.Tokenizer.CHAT_TEMPLATE:
            continue
        value = field.contents()
        if tokens is not None and name in (
            gguf.Keys.Tokenizer.LIST,
            gguf.Keys.Tokenizer.TOKEN_TYPE,
        ):
            value = tokens(name, list(value))
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, kind, sub_type=sub)
    writer.add_chat_template(chat_template)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name,
            tensor.data.shape,
            tensor.data.dtype,
            tensor.data.nbytes,
            tensor.tensor_type,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return path


def real_template(name: str) -> str:
    """A template of the llama-cpp-python sdist by file name; the test is skipped where
    they are not at hand."""
    folder = os.environ.get("TUI_BATCH_LLAMA_TEMPLATES")
    path = Path(folder) / name if folder else None
    if path is None or not path.is_file():
        pytest.skip(f"{name}: set TUI_BATCH_LLAMA_TEMPLATES to the sdist's templates folder")
    return path.read_text(encoding="utf-8")
