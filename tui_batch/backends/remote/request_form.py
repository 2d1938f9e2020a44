"""How a job on servers keys its answers in the answer cache, live or through a Batch API."""

from __future__ import annotations

import json

from tui_batch.core.backend import RequestForm
from tui_batch.core.jobs import GenerationSettings, Prompt, messages_for
from tui_batch.core.servers import ServerSettings


def server_request_form(
    server: ServerSettings, model: str, settings: GenerationSettings
) -> RequestForm:
    """Keyed by the model's name and every server's base URL (sorted: the order servers
    are listed in does not change an answer), and the messages sent. A batch is answered
    by the same model as a live request: the two share their answers."""
    urls = sorted(endpoint.url for endpoint in server.endpoints)

    def render(prompt: Prompt) -> str:
        return json.dumps(messages_for(prompt, settings), ensure_ascii=False, sort_keys=True)

    where = urls[0] if len(urls) == 1 else f"{len(urls)} servers"
    return RequestForm(
        model=json.dumps({"model": model, "servers": urls}),
        label=f"{model} @ {where}",
        render=render,
    )
