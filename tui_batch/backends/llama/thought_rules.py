"""One prompt of a thinking model in llama-cpp-python's own loop (`--parallel 0`): a
logits processor that follows the output as thought and answer by token ids, with the
rules the parallel loop applies (`parallel._advance`): past its budget the thought's
closing tokens are forced; the schema applies to the answer only (a thought may open
first); no end of generation inside the thought, nor before an answer follows it. And a
stopping criterion for the job's stop strings, which end the answer, not the thought."""

from __future__ import annotations

from typing import Any

import numpy as np

from tui_batch.backends.llama.answer import GeneratedText
from tui_batch.backends.llama.constraint import BLOCKED
from tui_batch.backends.llama.thinking import THINKING, ThoughtTracker


class ThoughtRules:
    """Called before each token is chosen with every token so far (the prompt's, then
    those generated: `prompt_tokens` says where they start)."""

    def __init__(
        self,
        tracker: ThoughtTracker,
        llama: Any,
        eog: list[int],
        prompt_tokens: int,
        stop: list[str],
        constraint: Any = None,
        schema: Any = None,
    ) -> None:
        self.tracker = tracker
        self.llama = llama
        self.eog = eog
        self.prompt_tokens = prompt_tokens
        self.stop = stop
        self.constraint = constraint
        self.matcher = constraint.matcher(schema) if constraint is not None else None
        self.answer_ids: list[int] = []
        self.taken = 0
        # What was streamed of the thought and of the answer (their ids), and their text.
        self._shown = [0, 0]
        self._texts = (GeneratedText([]), GeneratedText([s.encode("utf-8") for s in stop]))

    def follow(self, generated: Any) -> None:
        """Take the tokens generated since the last call."""
        for token in generated[self.taken :]:
            answer = self.tracker.take(int(token))
            self.answer_ids += answer
            if self.matcher is not None:
                for piece in answer:
                    self.matcher.consume_token(piece)
        self.taken = len(generated)

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        self.follow(input_ids[self.prompt_tokens :])
        tracker = self.tracker
        forced = tracker.forced()
        if forced is not None:
            only = np.full_like(logits, BLOCKED)
            only[forced] = logits[forced]
            return only
        if self.matcher is not None and tracker.answering:
            opening = tracker.may_open
            kept = logits[opening] if opening is not None else None
            logits = self.constraint.mask_one(logits, self.matcher)
            if opening is not None:
                logits[opening] = kept
        if tracker.phase == THINKING or (tracker.had_thought and not self.answer().strip()):
            logits = np.array(logits, copy=True)
            logits[self.eog] = BLOCKED
        return logits

    def answer(self) -> str:
        """The answer so far, cut at the first of the job's stop strings."""
        text = self.llama.detokenize(self.answer_ids).decode("utf-8", errors="ignore")
        for stop in self.stop:
            at = text.find(stop)
            if at >= 0:
                text = text[:at]
        return text

    def stopped(self, input_ids: Any, logits: Any) -> bool:
        """A stopping criterion: the answer has reached one of the job's stop strings."""
        if not self.stop or not self.answer_ids:
            return False
        self.follow(input_ids[self.prompt_tokens :])
        text = self.llama.detokenize(self.answer_ids).decode("utf-8", errors="ignore")
        return any(stop in text for stop in self.stop)

    def news(self) -> tuple[str, str]:
        """The thought's and the answer's text since the last call, to stream (none of
        the answer past a stop string, nor half a character)."""
        news = []
        for which, ids in enumerate((self.tracker.thought, self.answer_ids)):
            text = self._texts[which]
            for token in ids[self._shown[which] :]:
                text.add(self.llama.detokenize([token]))
            self._shown[which] = len(ids)
            news.append(text.settled())
        return news[0], news[1]

    def thought(self) -> str:
        ids = self.tracker.thought
        return self.llama.detokenize(ids).decode("utf-8", errors="ignore").strip()
