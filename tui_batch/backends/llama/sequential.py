"""The in-process llama.cpp backend (llama-cpp-python), one prompt at a time.

The model is loaded once per job. Each prompt is formatted with the model's own chat
template by `create_chat_completion` and streamed, so one engine step is one token:
cancel takes effect mid-generation and a UI can show the text as it comes.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.backends.llama.build_check import check_build
from tui_batch.backends.llama.chat import ChatFormat
from tui_batch.backends.llama.constraint import Made, enforcement, make_constraint
from tui_batch.backends.llama.loading import (
    LOAD_LOCK,
    import_llama_cpp,
    load_failure,
    load_key,
    log_errors,
)
from tui_batch.backends.llama.thought_rules import ThoughtRules
from tui_batch.backends.llama.tokens import local_request_form
from tui_batch.core.backend import (
    Backend,
    Completion,
    RequestForm,
    Task,
    TokenSink,
    describe_error,
)
from tui_batch.core.errors import ModelError
from tui_batch.core.jobs import BatchJob, GenerationSettings, Prompt, messages_for

_CONTEXT_OVERFLOW = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


@dataclass(slots=True)
class _Generation:
    task: Task
    stream: Iterator[dict[str, Any]]
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    # A prompt that may think: its output followed as thought and answer.
    rules: ThoughtRules | None = None


class _TokenCounter:
    """Counts prompt and generated tokens the way llama-cpp-python's `usage` does.

    A streamed chat completion carries no usage figures, so we wrap the model's
    `generate` (which `create_completion` drives): its input is the prompt's tokens and
    each token it yields, end-of-generation tokens aside, is one completion token.
    """

    def __init__(self, llama: Any, llama_cpp: Any) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.generated: list[int] = []  # the tokens generated, ends of generation aside
        original = llama.generate
        vocab = llama._model.vocab
        is_eog = llama_cpp.llama_vocab_is_eog

        def generate(tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
            self.prompt_tokens = len(tokens)
            self.completion_tokens = 0
            self.generated = []
            for token in original(tokens, *args, **kwargs):
                if not is_eog(vocab, token):
                    self.completion_tokens += 1
                    self.generated.append(token)
                yield token

        llama.generate = generate


class _SchemaMask:
    """The job's schema as llama-cpp-python's logits processor, for one prompt: it is
    called before each token is chosen with every token so far (the prompt's and those
    generated); its matcher takes the new ones, and the logits keep only what it allows."""

    def __init__(self, constraint: Any, schema: Any, counter: _TokenCounter) -> None:
        self.constraint = constraint
        self.matcher = constraint.matcher(schema)
        self.counter = counter
        self.taken = 0

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        generated = input_ids[self.counter.prompt_tokens :]
        for token in generated[self.taken :]:
            self.matcher.consume_token(int(token))
        self.taken = len(generated)
        return self.constraint.mask_one(logits, self.matcher)


class LlamaCppBackend(Backend):
    """Runs a GGUF model in this process. One thread must own it: the engine's."""

    capacity = 1

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        self._llama: Any = None
        self._load_key: tuple[Any, ...] | None = None
        self._current: _Generation | None = None
        self.settings = GenerationSettings()
        self.on_token: TokenSink | None = None
        # How the job's schema is enforced (None: it has none), and by what.
        self.schema_mode: str | None = None
        self._constraint: Any = None
        self._constraint_made: Made | None = None
        # The model's chat template (None: it has none; llama-cpp-python then picks a
        # format) and its end-of-generation tokens, for prompts that think.
        self._chat: ChatFormat | None = None
        self._eog: list[int] = []

    def begin(self, job: BatchJob, on_token: TokenSink | None = None) -> None:
        self.settings = job.settings
        super().begin(job, on_token)
        schema = job.settings.schema
        if schema is not None and self._constraint_made is None:
            vocab = self._llama._model.vocab
            self._constraint_made = make_constraint(
                import_llama_cpp(), vocab, self._llama.n_vocab()
            )
        made = self._constraint_made if schema is not None else (None, None)
        self._constraint, self.schema_mode = enforcement(made or (None, None), schema)

    def open(self, settings: GenerationSettings) -> None:
        """Load the model for these settings, unless it is loaded with them already."""
        threads, key = load_key(settings)
        if self._llama is not None and key == self._load_key:
            return
        self.close()
        llama_cpp = import_llama_cpp()
        if not self.model_path.is_file():
            raise ModelError(f"Model file not found: {self.model_path}")
        check_build(self.model_path, settings.n_gpu_layers)
        # verbose=True keeps llama-cpp-python off the file descriptors (`_silence_log`);
        # what it then prints while loading goes nowhere, and nothing after.
        try:
            with LOAD_LOCK, contextlib.redirect_stderr(io.StringIO()):
                log_errors.clear()
                self._llama = llama_cpp.Llama(
                    model_path=str(self.model_path),
                    n_ctx=settings.n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=settings.n_gpu_layers,
                    verbose=True,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise load_failure(self.model_path, exc) from None
        self._llama.verbose = False
        self._counter = _TokenCounter(self._llama, llama_cpp)
        self._load_key = key
        self._constraint_made = None
        model = self._llama._model
        try:
            self._chat = ChatFormat(model, self.model_path.name)
        except ModelError:
            self._chat = None
        vocab, n_vocab = model.vocab, self._llama.n_vocab()
        self._eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]

    @property
    def in_flight(self) -> int:
        return 0 if self._current is None else 1

    def submit(self, task: Task) -> None:
        settings, options = self.settings, task.prompt.options
        stop = options.get("stop", settings.stop)
        if self._chat is not None and self._chat.thinking is not None:
            self._current = self._thinking(task, [stop] if isinstance(stop, str) else stop)
            return
        processors = None
        if self._constraint is not None and settings.schema is not None:
            mask = _SchemaMask(self._constraint, settings.schema, self._counter)
            processors = import_llama_cpp().LogitsProcessorList([mask])
        self._current = _Generation(
            task=task,
            stream=self._llama.create_chat_completion(
                messages=messages_for(task.prompt, settings),
                logits_processor=processors,
                max_tokens=options.get("max_tokens", settings.max_tokens),
                temperature=options.get("temperature", settings.temperature),
                top_p=options.get("top_p", settings.top_p),
                seed=options.get("seed", settings.seed),
                stop=[stop] if isinstance(stop, str) else list(stop or []),
                stream=True,
            ),
        )

    def _thinking(self, task: Task, stop: list[str]) -> _Generation:
        """A prompt of a model that can think: formatted with the job's reasoning switch
        (`create_chat_completion` cannot pass it) and run by `create_completion`, under
        `ThoughtRules` where it may think."""
        assert self._chat is not None
        settings, options = self.settings, task.prompt.options
        tokens, template_stop = self._chat.tokens(messages_for(task.prompt, settings), settings)
        tracker = self._chat.tracker(settings, settings.reasoning_budget)
        llama_cpp = import_llama_cpp()
        rules, processors, criteria = None, None, None
        if tracker is not None:
            schema = settings.schema if self._constraint is not None else None
            rules = ThoughtRules(
                tracker, self._llama, self._eog, len(tokens), stop, self._constraint, schema
            )
            processors = llama_cpp.LogitsProcessorList([rules])
            criteria = llama_cpp.StoppingCriteriaList([rules.stopped])
            stop = []  # the job's stop strings end the answer: `rules.stopped`
        elif self._constraint is not None and settings.schema is not None:
            mask = _SchemaMask(self._constraint, settings.schema, self._counter)
            processors = llama_cpp.LogitsProcessorList([mask])
        stream = self._llama.create_completion(
            prompt=tokens,
            max_tokens=options.get("max_tokens", settings.max_tokens),
            temperature=options.get("temperature", settings.temperature),
            top_p=options.get("top_p", settings.top_p),
            seed=options.get("seed", settings.seed),
            stop=[*stop, *template_stop],
            stream=True,
            logits_processor=processors,
            stopping_criteria=criteria,
        )
        return _Generation(task=task, stream=stream, rules=rules)

    def _thought_end(self, generation: _Generation) -> Completion:
        """A thinking prompt's completion: its answer and its thought, by token ids."""
        rules = generation.rules
        assert rules is not None
        rules.follow(self._counter.generated)
        tracker = rules.tracker
        answer = rules.answer()
        completion = Completion(
            generation.task.index,
            response_text=answer.lstrip() if tracker.had_thought else answer,
            tokens_input=self._counter.prompt_tokens,
            tokens_output=self._counter.completion_tokens,
            finish_reason=generation.finish_reason,
        )
        if tracker.had_thought:
            completion.reasoning = rules.thought()
            completion.thought_closed = tracker.closed
            completion.reasoning_tokens = tracker.thought_tokens
        return completion

    def request_form(self, job: BatchJob) -> RequestForm:
        return local_request_form(self.model_path, job.settings)

    def input_tokens(self, prompt: Prompt) -> int | None:
        if self._chat is None:
            return None
        return len(self._chat.tokens(messages_for(prompt, self.settings), self.settings)[0])

    def step(self) -> list[Completion]:
        generation = self._current
        if generation is None:
            return []
        index = generation.task.index
        try:
            chunk = next(generation.stream)
        except StopIteration:
            self._current = None
            if generation.rules is not None:
                return [self._thought_end(generation)]
            return [
                Completion(
                    index,
                    response_text="".join(generation.parts),
                    tokens_input=self._counter.prompt_tokens,
                    tokens_output=self._counter.completion_tokens,
                    finish_reason=generation.finish_reason,
                )
            ]
        except Exception as exc:  # noqa: BLE001 - a failing prompt must not end the batch
            self._current = None
            return [self._failure(index, exc)]
        choice = chunk["choices"][0]
        if generation.rules is not None:  # a thought and an answer, told apart by token ids
            generation.finish_reason = choice.get("finish_reason") or generation.finish_reason
            if self.on_token is not None:
                generation.rules.follow(self._counter.generated)
                thought, answer = generation.rules.news()
                if thought:
                    self.on_token(index, thought, True)
                if answer:
                    self.on_token(index, answer, False)
            return []
        # A chat completion's chunk, or (a model that can think) a completion's.
        text = choice["text"] if "text" in choice else choice.get("delta", {}).get("content")
        if text:
            generation.parts.append(text)
            if self.on_token is not None:
                self.on_token(index, text, False)
        if choice.get("finish_reason"):
            generation.finish_reason = choice["finish_reason"]
        return []

    def _failure(self, index: int, exc: Exception) -> Completion:
        overflow = _CONTEXT_OVERFLOW.search(str(exc))
        if overflow:
            tokens, context = overflow.groups()
            return Completion(
                index,
                error=f"Prompt is {tokens} tokens but the context holds {context}: "
                "shorten it or give a bigger context size",
                tokens_input=int(tokens),
                finish_reason=None,
                retryable=False,
            )
        return Completion(index, error=describe_error(exc), finish_reason=None)

    def abort(self) -> list[int]:
        if self._current is None:
            return []
        index = self._current.task.index
        close = getattr(self._current.stream, "close", None)
        if close is not None:
            close()
        self._current = None
        return [index]

    def close(self) -> None:
        self.abort()
        if self._llama is not None:
            self._llama.close()
        self._llama = None
        self._load_key = None
