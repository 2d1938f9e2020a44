"""Thinking models on servers, against our fault server speaking each server's wire form
(vLLM's and Ollama's `reasoning`, llama-server's `reasoning_content`, Ollama's native
`thinking`, OpenRouter's `reasoning_details`, tags inline), streamed and whole: the thought
is kept apart from the answer, a thought with no answer is never a success, and the
switches reach the server in the forms servers take."""

from __future__ import annotations

import pytest

from tui_batch.core.jobs import GenerationSettings, JobStatus
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT

from support.fake_server import FakeServer
from support.remote import run, settings

FORMS = ("reasoning", "reasoning_content", "thinking", "reasoning_details", "inline")


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("form", FORMS)
def test_the_thought_is_kept_apart_from_the_answer(tmp_path, form, stream):
    with FakeServer() as fake:
        fake.thought_form = form
        fake.script.extend(["think:the user wants a colour|Blue.", "stray:hmm|Red."])
        job, results, _ = run(
            tmp_path, settings(fake.url, stream=stream, concurrency=1), ["a", "b"]
        )
    assert job.status is JobStatus.COMPLETED
    first, second = results
    assert first.success and first.response_text == "Blue."
    assert first.reasoning == "the user wants a colour"
    if form != "inline":  # inline, the server counts the tags as answer tokens
        assert first.reasoning_tokens == 5
    # A close tag left at the start of the answer (a forced close) is not the answer's.
    assert second.response_text == "Red." and second.reasoning == "hmm"


@pytest.mark.parametrize("form", ["reasoning_content", "inline"])
def test_a_thought_with_no_answer_fails_and_is_counted_apart(tmp_path, form):
    with FakeServer() as fake:
        fake.thought_form = form
        # Greedy: a rerun would think the same again, so it is not sent again.
        fake.script.extend(["thinkcut:first I will consider", "think:quick|Yes."])
        job, results, _ = run(tmp_path, settings(fake.url, concurrency=1), ["a", "b"])
        sent = len(fake.bodies)
    cut, answered = results
    assert not cut.success and cut.error_message == INCOMPLETE_THOUGHT
    assert cut.thought_cut and cut.response_text == "" and cut.finish_reason == "length"
    assert cut.reasoning == "first I will consider" and cut.attempts == 1
    assert answered.success and answered.response_text == "Yes."
    assert sent == 2 and job.failed == 1


def test_a_sampled_thought_with_no_answer_is_sent_again(tmp_path):
    with FakeServer() as fake:
        fake.script.extend(["thinkcut:long long", "think:short|Fine."])
        _, (result,), _ = run(
            tmp_path,
            settings(fake.url),
            ["a"],
            settings=GenerationSettings(temperature=0.8),
        )
    assert result.success and result.response_text == "Fine." and result.attempts == 2
    assert result.attempt_log[0].error == INCOMPLETE_THOUGHT


def asked(fake: FakeServer) -> list[dict]:
    """The job's requests, not the probe's."""
    return [b for b in fake.bodies if b["messages"][-1]["content"] != "Say hello."]


def test_the_switch_effort_and_budget_reach_the_server(tmp_path):
    with FakeServer() as fake:
        fake.reply = "ok"
        chosen = GenerationSettings(
            reasoning="off", reasoning_effort="low", max_tokens=64, temperature=0.0
        )
        _, _, backend = run(tmp_path / "a", settings(fake.url), ["a"], settings=chosen)
        budget = GenerationSettings(reasoning="on", reasoning_budget=16, max_tokens=64)
        run(tmp_path / "b", settings(fake.url), ["a"], settings=budget)
        run(tmp_path / "c", settings(fake.url), ["a"])
        off, on, auto = asked(fake)
    said = backend.status().changes
    assert any("reasoning fields taken (chat_template_kwargs, reasoning_effort)" in n for n in said)
    assert off["chat_template_kwargs"] == {"enable_thinking": False, "thinking": False}
    assert off["reasoning_effort"] == "low" and "thinking_budget_tokens" not in off
    assert on["chat_template_kwargs"]["enable_thinking"] is True
    assert on["thinking_budget_tokens"] == 16 and on["thinking_token_budget"] == 16
    # auto: the model's and server's defaults, and a request every server takes.
    assert not {"chat_template_kwargs", "reasoning_effort", "thinking_budget_tokens"} & set(auto)


def test_plain_answers_have_no_thought(tmp_path):
    with FakeServer() as fake:
        _, results, _ = run(tmp_path, settings(fake.url), ["a"])
    assert results[0].success and results[0].reasoning is None
    assert results[0].response_text == "w0 w1 w2 w3 w4 w5 w6 w7"


def test_fields_a_server_refuses_are_left_out_and_said(tmp_path):
    with FakeServer() as fake:
        fake.reply = "Blue."
        fake.refuse_fields = {"chat_template_kwargs"}  # as OpenAI's API refuses it
        chosen = GenerationSettings(reasoning="off", reasoning_effort="low")
        job, results, backend = run(tmp_path, settings(fake.url), ["a", "b"], settings=chosen)
        sent = asked(fake)
    assert job.status is JobStatus.COMPLETED and all(r.success for r in results)
    assert all("chat_template_kwargs" not in b and b["reasoning_effort"] == "low" for b in sent)
    note = next(n for n in backend.status().changes if "refused" in n)
    assert "chat_template_kwargs (HTTP 400: Unrecognized request argument supplied" in note
    assert "taken: reasoning_effort" in note


def test_checking_the_servers_says_which_reasoning_fields_each_takes(tmp_path):
    from tui_batch.backends.factory import check_servers

    with FakeServer() as fake, FakeServer() as strict:
        strict.refuse_fields = {"chat_template_kwargs", "reasoning_effort"}
        chosen = GenerationSettings(reasoning="off", reasoning_effort="low")
        check = check_servers(settings(fake.url, strict.url), "fake-model", None, chosen)
    said = check.warnings()
    assert f"{fake.url}: reasoning fields taken (chat_template_kwargs, reasoning_effort)" in said
    refused = next(w for w in said if w.startswith(strict.url))
    assert "refused, left out: chat_template_kwargs (HTTP 400" in refused
    assert "reasoning_effort (HTTP 400" in refused


def test_the_run_says_what_each_server_took(tmp_path):
    from conftest import run_cli

    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    with FakeServer() as fake:
        fake.refuse_fields = {"chat_template_kwargs"}
        done = run_cli(
            "run", str(prompts), "--server", fake.url, "--model", "fake-model",
            "--reasoning", "off", "--reasoning-effort", "low",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "refused, left out: chat_template_kwargs" in done.stderr
    assert "taken: reasoning_effort" in done.stderr
