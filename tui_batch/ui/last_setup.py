"""The job setup a person used last, remembered between sessions (a small JSON file):
the job's settings as a job file keeps them (`RunSpec.to_values`), and the few things
only the screen knows (which input tab and which half were shown, and what the other
tab and half held).

    {"job": {"prompts": "/home/me/p.txt", "max_tokens": 64, ...},
     "screen": {"tab": "prompts", "run_on": "local", "server": {...}, "template": {...}}}
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.core.paths import config_dir
from tui_batch.core.scratch import write_atomically

SETUP_FILE = "last_setup.json"


@dataclass(slots=True)
class LastSetup:
    """`job`: a job file's values, keyed by setting name (paths as text); `screen`:
    `tab` ("prompts" or "template"), `run_on` ("local" or "server"), and the fields of
    the tab and half that were not used, as typed (`local`, `server`, `template`,
    `prompts_path`)."""

    job: dict[str, Any] = field(default_factory=dict)
    screen: dict[str, Any] = field(default_factory=dict)


def setup_path() -> Path:
    return config_dir() / SETUP_FILE


def load_last_setup() -> LastSetup:
    """The remembered setup; empty when there is none or it cannot be read."""
    try:
        data = json.loads(setup_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return LastSetup()
    if not isinstance(data, dict):
        return LastSetup()
    if "job" not in data:
        return _from_fields(data)
    job, screen = data.get("job"), data.get("screen")
    return LastSetup(
        job if isinstance(job, dict) else {}, screen if isinstance(screen, dict) else {}
    )


def save_last_setup(setup: LastSetup) -> None:
    """Write the setup atomically; failing to remember is not worth an error."""
    document = {"job": setup.job, "screen": setup.screen}
    with contextlib.suppress(OSError):
        write_atomically(setup_path(), lambda out: json.dump(document, out, indent=2, default=str))


# What earlier versions remembered: the form's fields as typed, field by field.
_FIELD_TEXTS = ("max_tokens", "temperature", "seed", "retries", "checkpoint_every")
_PRICES = ("price_in", "price_out")
_LOCAL = ("n_ctx", "n_threads", "n_gpu_layers", "parallel")
_SERVER = ("concurrency", "rpm", "tpm")
_RENAMED = {"threads": "n_threads", "gpu_layers": "n_gpu_layers"}


def _from_fields(old: dict[str, Any]) -> LastSetup:
    """A setup remembered field by field (by earlier versions), as a job's values and the
    screen's."""
    for name, new in _RENAMED.items():
        old.setdefault(new, old.get(name))
    job: dict[str, Any] = {key: old.get(key) for key in (*_FIELD_TEXTS, *_PRICES)}
    strategy = old.get("strategy") or "continue"
    if strategy == "threshold":
        strategy = f"threshold:{old.get('threshold') or ''}"
    job.update(error_strategy=strategy, system_prompt=old.get("system"))
    run_on = "server" if old.get("run_on") == "server" else "local"
    server = old.get("server") if isinstance(old.get("server"), dict) else {}
    local = {key: old.get(key) for key in (*_LOCAL, "batch_invariant", "model")}
    screen: dict[str, Any] = {"run_on": run_on}
    if run_on == "server":
        job.update({key: server.get(key) for key in _SERVER})
        job.update(
            server=(server.get("servers") or "").split() or None,
            api_key_env=server.get("api_key_env") or None,
            model=server.get("server_model") or None,
        )
        screen["local"] = local
    else:
        job.update({key: local[key] for key in _LOCAL})
        job.update(batch_invariant=local["batch_invariant"] is True, model=local["model"])
        screen["server"] = server
    template = old.get("template") if isinstance(old.get("template"), dict) else {}
    if old.get("input") == "template":
        screen["tab"] = "template"
        job.update({key: template.get(key) for key in ("template", "template_text", "data")})
        job["id_field"] = template.get("id_field")
        screen["prompts_path"] = old.get("prompts_path")
    else:
        screen["tab"] = "prompts"
        job["prompts"] = old.get("prompts_path")
        screen["template"] = template
    return LastSetup({k: v for k, v in job.items() if v not in (None, "")}, screen)
