"""A run kept within its job's budget (`core.budget`).

Before a prompt starts, the most it could spend is reserved: its input, counted exactly
where the backend can (a local model: its chat template and tokenizer), else bounded from
its text's bytes (a token a byte, the most any tokenizer takes, until the server's own
counts show how many it takes a byte: then the most seen), and its output, its max
tokens (or FALLBACK_OUTPUT where none is set). A prompt whose reservation would take what
was spent and what is reserved past the budget does not start; once nothing runs, the
job stops, resumable, saying why. When a prompt ends its reservation gives way to what it
really took (an answer served from the cache took nothing). So a job on a local model
never crosses its budget; on servers, not unless a prompt takes more tokens a byte than
any before it did.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tui_batch.core.budget import Budget
from tui_batch.core.jobs import BatchJob, BatchResult
from tui_batch.core.prompt import Prompt
from tui_batch.core.rows import ResultCounts
from tui_batch.core.servers import paid

# How the reason of a job stopped by its budget begins.
BUDGET_REACHED = "budget reached"
# The output reserved for a prompt with no max tokens.
FALLBACK_OUTPUT = 1024
# A server's chat framing around the text, in bytes, counted on top of it.
FRAMING = 64


class BudgetGuard:
    """`job`'s budget, with what its results so far took (`spent`)."""

    def __init__(
        self,
        job: BatchJob,
        budget: Budget,
        spent: ResultCounts,
        count: Callable[[Prompt], int | None],
    ) -> None:
        """`count`: a prompt's input tokens, exactly, where the backend can tell."""
        self.job, self.budget, self.count = job, budget, count
        self.per_byte = 1.0  # input tokens a byte of a prompt's text, at most (servers)
        self.spent_input, self.spent_output = spent.tokens_input, spent.tokens_output
        self._reserved: dict[int, tuple[int, int]] = {}
        self._reserved_input = self._reserved_output = 0
        self.refused: tuple[int, int] | None = None  # the reservation that did not fit
        self._counted = False  # a server's count has replaced the first bound

    def take(self, index: int, prompt: Prompt) -> bool:
        """Reserve the most prompt `index` could spend, if that fits what is left."""
        needed = self._most(prompt)
        tokens_in = self.spent_input + self._reserved_input + needed[0]
        tokens_out = self.spent_output + self._reserved_output + needed[1]
        if not self._within(tokens_in, tokens_out):
            self.refused = needed
            return False
        self._reserved[index] = needed
        self._reserved_input += needed[0]
        self._reserved_output += needed[1]
        return True

    def settle(self, index: int, result: BatchResult | None) -> None:
        """Prompt `index` ended: its reservation freed, and `result` (None: it runs
        again) counted for what it took."""
        freed = self._reserved.pop(index, (0, 0))
        self._reserved_input -= freed[0]
        self._reserved_output -= freed[1]
        if result is not None and result.cached_from is None:
            self.spent_input += result.tokens_input
            self.spent_output += result.tokens_output
            if result.input_known and result.tokens_input:
                seen = result.tokens_input / self._bytes(self.job.prompts[index])
                self.per_byte = max(self.per_byte, seen) if self._counted else seen
                self._counted = True

    def spent(self) -> str:
        """`budget: 1,234 of 5,000 tokens`, `budget: 0.42 of 5.00`, or both."""
        tokens = self.spent_input + self.spent_output
        parts = []
        if self.budget.max_total_tokens is not None:
            parts.append(f"{tokens:,} of {self.budget.max_total_tokens:,} tokens")
        if self.budget.max_cost is not None:
            parts.append(
                f"{self._cost(self.spent_input, self.spent_output):.4g} of "
                f"{self.budget.max_cost:.4g}"
            )
        return "budget: " + ", ".join(parts)

    def reason(self) -> str:
        """Why the job stopped: what was spent, and what the next prompt could take."""
        reason = f"{self.spent()} spent"
        if self.refused is not None:
            more = sum(self.refused)
            reason += f"; the next prompt could take up to {more:,} tokens more"
        return f"{BUDGET_REACHED}: {reason.removeprefix('budget: ')}"

    def _most(self, prompt: Prompt) -> tuple[int, int]:
        settings = self.job.settings
        tokens = self.count(prompt)
        if tokens is None:
            tokens = math.ceil(self._bytes(prompt) * self.per_byte)
        output = prompt.options.get("max_tokens", settings.max_tokens) or FALLBACK_OUTPUT
        return tokens, output

    def _bytes(self, prompt: Prompt) -> int:
        """The prompt's text as sent, in bytes, with the chat's framing."""
        text = prompt.text + (prompt.system or self.job.settings.system_prompt or "")
        text += "".join(str(m.get("content", "")) for m in prompt.messages or [])
        return len(text.encode("utf-8")) + FRAMING

    def _within(self, tokens_in: int, tokens_out: int) -> bool:
        limit = self.budget.max_total_tokens
        if limit is not None and tokens_in + tokens_out > limit:
            return False
        cost = self.budget.max_cost
        return cost is None or self._cost(tokens_in, tokens_out) <= cost

    def _cost(self, tokens_in: int, tokens_out: int) -> float:
        prices = paid(self.job.prices, self.job.server)
        return 0.0 if prices is None else prices.cost(tokens_in, tokens_out)
