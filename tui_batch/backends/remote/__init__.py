"""OpenAI-compatible servers, the only part of tui-batch that imports `openai`: `backend`
(the backend), `admission` (its limits), `call` (one request under its timeouts),
`chat_wire` (request bodies and answers, read and checked), `openai_api` (clients, keys,
failures, and the checks before a job)."""
