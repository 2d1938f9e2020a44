"""Models that think before they answer: the settings' words, the thought split from the
answer where it arrives inline, and the rule that a thought with no answer after it is
never an answer.

Backends find the thought where their model or server puts it (a local model's tokens,
a server's `reasoning` field); what arrives as text in the answer is split here, by the
tag pairs models write. The engine then applies `incomplete`: an output that ended inside
the thought, or a thought followed by nothing, fails as INCOMPLETE_THOUGHT (retried, then
failed), never a silent empty success.
"""

from __future__ import annotations

from dataclasses import dataclass

# --reasoning: the model's own default, thinking asked for, or switched off.
REASONING_MODES = ("auto", "on", "off")
# --reasoning-effort, as gpt-oss's template and servers that take it read it.
EFFORTS = ("low", "medium", "high")

INCOMPLETE_THOUGHT = (
    "incomplete: the thought used the whole budget (raise max tokens or set a reasoning budget)"
)

# The tag pairs models write around a thought as text (Qwen3, QwQ, DeepSeek-R1, GLM,
# SmolLM3; Magistral 2507+; Seed-OSS). Channel formats (gpt-oss, Gemma 4) are control
# tokens, which servers take out themselves and a local model's tokens show.
TAG_PAIRS = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("[THINK]", "[/THINK]"),
    ("<seed:think>", "</seed:think>"),
)


@dataclass(frozen=True, slots=True)
class Thought:
    """An output as thought and answer: `reasoning` None when there was no thought;
    `closed` False when the output ended inside it."""

    reasoning: str | None
    answer: str
    closed: bool = True


def split_inline(content: str, opened: bool = False) -> Thought:
    """`content` split at its thought's tags: a thought that opens it (`<think>…</think>`),
    or, where the prompt opened the block already (`opened`, or a close tag with no open
    tag before it: QwQ, the R1 distills), everything before the close tag. No tags, and
    not `opened`: all answer."""
    head = content.lstrip()
    for start, end in TAG_PAIRS:
        if head.startswith(start):
            body = head[len(start) :]
            thought, found, answer = body.partition(end)
            if not found:
                return Thought(body.strip(), "", closed=False)
            return Thought(thought.strip(), strip_stray_close(answer))
    for start, end in TAG_PAIRS:
        if end in content and start not in content.partition(end)[0]:
            thought, _, answer = content.partition(end)
            return Thought(thought.strip(), strip_stray_close(answer))
    if opened:
        return Thought(content.strip(), "", closed=False)
    return Thought(None, content)


def from_parts(content: str, apart: str) -> Thought:
    """A server's answer as thought and answer: the thought it sent apart (`apart`,
    from a `reasoning` field), or else the one inline in `content`."""
    if apart.strip():
        return Thought(apart.strip(), strip_stray_close(content))
    return split_inline(content)


def strip_stray_close(answer: str) -> str:
    """The answer after a thought: the white space that follows a close tag taken off,
    and a close tag some models write again after a forced one (llama.cpp #28182)."""
    head = answer.lstrip()
    for _, end in TAG_PAIRS:
        if head.startswith(end):
            return head[len(end) :].lstrip()
    return head


def incomplete(reasoning: str | None, answer: str, closed: bool = True) -> bool:
    """Whether an output is a thought with no answer: it ended inside the thought, or
    nothing but white space followed it."""
    return reasoning is not None and (not closed or not answer.strip())
