"""Whether and how a local model thinks, found from its own chat template, and one
prompt's thought followed token by token while it decodes.

No table of model names: the template is rendered as llama.cpp's differential analyser
does. A conversation whose assistant turn holds a sentinel thought (`reasoning_content`,
and `thinking` for the templates that read that) and a sentinel answer shows the markers
around a thought: the text between the generation prompt and the sentinel thought opens
it (`<think>`, `<|channel|>analysis<|message|>`), the text between the sentinels closes
it (`</think>`, `<|end|><|start|>assistant<|channel|>final<|message|>`). The generation
prompt rendered with `enable_thinking` true, false and not given says whether the switch
does anything, what the model does by default, and whether the prompt already opens the
block (Qwen3.5, QwQ, the R1 distills end it in `<think>\\n`).

The markers are followed as token ids (`ThoughtTracker`): control tokens such as
gpt-oss's channels are no text at all to a plain detokenizer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tui_batch.core.jobs import GenerationSettings

_THOUGHT, _ANSWER, _QUESTION = "\x02THOUGHT-7f3a\x03", "\x02ANSWER-7f3a\x03", "Hi there"


@dataclass(frozen=True, slots=True)
class ThinkingFormat:
    """How a model's template writes a thought: the text that opens it and the text that
    closes it (as the template renders them), whether `enable_thinking` changes the
    prompt (`switch`), whether the model thinks unless told (`default_on`), and for each
    setting whether the generation prompt already opens the block."""

    start: str
    end: str
    switch: bool
    default_on: bool
    opened_on: bool
    opened_off: bool
    opened_default: bool
    # The template names a reasoning effort (gpt-oss's `reasoning_effort`).
    effort: bool = False

    def thinks(self, settings: GenerationSettings) -> bool:
        """Whether a prompt of this job may think."""
        if settings.reasoning == "auto":
            return self.default_on
        return settings.reasoning == "on" or not self.switch

    def opened(self, settings: GenerationSettings) -> bool:
        """Whether the generation prompt of this job already opens the thought."""
        if settings.reasoning == "auto":
            return self.opened_default
        return self.opened_on if settings.reasoning == "on" else self.opened_off

    def describe(self) -> str:
        opens = "the prompt opens it" if self.opened_default else f"opens with {self.start!r}"
        switch = "switched by enable_thinking" if self.switch else "always on"
        return f"thinks ({opens}, closes with {self.end.strip()!r}; {switch})"


def template_kwargs(settings: GenerationSettings) -> dict[str, Any]:
    """What the chat template is rendered with for a job's reasoning settings: the
    switch passed explicitly (templates that test `not enable_thinking` read a missing
    one as off), the effort where given; nothing for `auto` (the template's default)."""
    kwargs: dict[str, Any] = {}
    if settings.reasoning != "auto":
        on = settings.reasoning == "on"
        kwargs["enable_thinking"] = on
        kwargs["thinking"] = on
    if settings.reasoning_effort is not None:
        kwargs["reasoning_effort"] = settings.reasoning_effort
    return kwargs


def find_thinking(template: str, eos: str, bos: str) -> ThinkingFormat | None:
    """How the template writes a thought, or None when it writes none."""
    from llama_cpp import llama_chat_format

    def formatter(generation: bool) -> Any:
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=generation
        )

    prompt, whole = formatter(True), formatter(False)
    question = [{"role": "user", "content": _QUESTION}]
    answered = [
        *question,
        {
            "role": "assistant",
            "content": _ANSWER,
            "reasoning_content": _THOUGHT,
            "thinking": _THOUGHT,
        },
    ]
    try:
        on = prompt(messages=question, enable_thinking=True, thinking=True).prompt
        off = prompt(messages=question, enable_thinking=False, thinking=False).prompt
        default = prompt(messages=question).prompt
        shown = whole(messages=answered, enable_thinking=True, thinking=True).prompt
    except Exception:  # noqa: BLE001 - a template that cannot render this has no thought we know
        return None
    markers = _from_turn(shown, on) or _from_empty_block(on, off) or _from_open_prompt(on)
    if markers is None:
        return None
    start, end = markers

    def opens(text: str) -> bool:
        return text.rstrip().endswith(start)

    return ThinkingFormat(
        start=start,
        end=end,
        switch=on != off,
        default_on=default != off or on == off,
        opened_on=opens(on),
        opened_off=opens(off),
        opened_default=opens(default),
        effort="reasoning_effort" in template,
    )


def _from_turn(shown: str, prompt: str) -> tuple[str, str] | None:
    """The markers around the sentinel thought of an assistant turn, as rendered."""
    if _THOUGHT not in shown or _ANSWER not in shown.partition(_THOUGHT)[2]:
        return None
    before, _, after = shown.partition(_THOUGHT)
    end = after.partition(_ANSWER)[0]
    # The opening: what the turn has between the assistant's header (the generation
    # prompt after the question) and the thought; where the prompt opens the thought
    # itself, the prompt's last tag.
    header = prompt.rpartition(_QUESTION)[2]
    at = before.rfind(header) if header else -1
    if at < 0:
        return None
    start = before[at + len(header) :].strip() or _last_tag(prompt)
    return (start, end) if start and end.strip() and _QUESTION not in start else None


def _from_empty_block(on: str, off: str) -> tuple[str, str] | None:
    """The markers of the empty thought a template adds to the generation prompt to
    switch thinking off (`<think>\\n\\n</think>\\n\\n`, `<|channel>thought\\n<channel|>`)."""
    # After the question: a switch may change the system turn too (SmolLM3, Gemma 4).
    on, off = on.rpartition(_QUESTION)[2], off.rpartition(_QUESTION)[2]
    if not off.startswith(on) or off == on:
        return None
    tail = off[len(on) :]
    end = _last_tag(tail)
    start = tail.rstrip()[: -len(end)].strip() if end else ""
    if not start or len(tail) > 80:
        return None
    return start, tail[tail.rstrip().rindex(end) :]


def _from_open_prompt(prompt: str) -> tuple[str, str] | None:
    """A prompt that ends by opening the thought (`<think>\\n`: QwQ, the R1 distills):
    its tag, and the tag that closes it (`</think>`)."""
    start = _last_tag(prompt)
    if start.startswith("<") and not start.startswith(("</", "<|", "<｜")):
        return start, "</" + start[1:]
    if start.startswith("[") and not start.startswith("[/"):
        return start, "[/" + start[1:]
    return None


def _last_tag(text: str) -> str:
    """The tag that ends `text` (white space aside), like `<think>` or `[THINK]`."""
    tail = text.rstrip()
    at = max(tail.rfind("<"), tail.rfind("["))
    return tail[at:] if at >= 0 and tail.endswith((">", "]")) else ""


def _common_prefix(a: str, b: str) -> int:
    count = min(len(a), len(b))
    for i in range(count):
        if a[i] != b[i]:
            return i
    return count


# Phases of one prompt's output.
BEFORE, THINKING, ANSWER = "before", "thinking", "answer"


@dataclass(slots=True)
class ThoughtTracker:
    """One prompt's output as thought and answer, token by token. `start` and `end` are
    the markers' token ids; `opened`: the prompt opened the thought already. With a
    `budget`, the thought's tokens past it are replaced by the closing tokens (`forced`),
    as llama.cpp's reasoning-budget sampler does."""

    start: list[int]
    end: list[int]
    opened: bool
    budget: int | None = None
    # What is forced to close the thought: the closing marker as the template writes
    # it (the white space after it too); `end` when not given.
    close: list[int] = field(default_factory=list)
    phase: str = BEFORE
    thought_tokens: int = 0
    # The thought's token ids, and the answer's (the markers are in neither).
    thought: list[int] = field(default_factory=list)
    forcing: deque[int] = field(default_factory=deque)
    # The output had a thought (it may have been empty).
    had_thought: bool = False
    _held: list[int] = field(default_factory=list)  # tokens that may be a marker's start

    def __post_init__(self) -> None:
        if self.opened:
            self.phase, self.had_thought = THINKING, True
        self._budget_check()

    @property
    def closed(self) -> bool:
        """The output did not end inside the thought."""
        return self.phase != THINKING

    @property
    def answering(self) -> bool:
        """The next token is the answer's, or may be its first (a schema applies)."""
        return self.phase == ANSWER or (self.phase == BEFORE and not self._held)

    @property
    def may_open(self) -> int | None:
        """The token that opens a thought, while the output may still start with one."""
        return self.start[0] if self.phase == BEFORE and not self._held and self.start else None

    def forced(self) -> int | None:
        """The token that must come next (the thought being closed), if any."""
        return self.forcing[0] if self.forcing else None

    def take(self, token: int) -> list[int]:
        """Follow one generated token; the tokens that are now the answer's (none while
        the thought goes on or a marker may be starting)."""
        if self.forcing and self.forcing[0] == token:
            self.forcing.popleft()
        if self.phase == ANSWER:
            return [token]
        self._held.append(token)
        held = self._held
        if self.phase == BEFORE:
            if held == self.start[: len(held)]:
                if len(held) == len(self.start):
                    self.phase, self._held, self.had_thought = THINKING, [], True
                    self._budget_check()
                return []
            self.phase, self._held = ANSWER, []
            return held
        # Thinking: the close marker may be starting.
        if held == self.end[: len(held)]:
            if len(held) == len(self.end):
                self.phase, self._held = ANSWER, []
            return []
        if self.forcing:  # the closing is forced: nothing of it is thought
            self._held = []
            return []
        # Not the marker: all held but a new possible start of it is thought.
        keep = _marker_start(held, self.end)
        self.thought += held[: len(held) - keep]
        self.thought_tokens += len(held) - keep
        self._held = held[len(held) - keep :]
        self._budget_check()
        return []

    def _budget_check(self) -> None:
        if (
            self.budget is not None
            and self.phase == THINKING
            and not self.forcing
            and self.thought_tokens >= self.budget
        ):
            close = self.close or self.end
            self.forcing.extend(
                close[len(self._held) :] if close[: len(self._held)] == self._held else close
            )


def _marker_start(held: list[int], marker: list[int]) -> int:
    """How many of the last tokens of `held` are the start of `marker`."""
    for size in range(min(len(held), len(marker) - 1), 0, -1):
        if held[-size:] == marker[:size]:
            return size
    return 0
