"""Prompt templates over data files: `template` (the sandboxed template and its front
matter), `limits` (what one render may build and how long it may take), `records` (data
files, streamed), `render` (every record rendered into a job's prompts) and `source`
(what a job keeps to tell whether its files changed)."""
