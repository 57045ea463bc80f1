"""The endpoint: which server, which model, which key, and the `openai` client that talks to it.

Any OpenAI-compatible chat endpoint works (OpenAI, Azure OpenAI's v1 API, vLLM, Ollama, LM Studio): set
`base_url` for anything but OpenAI itself. The key is never part of the config file (configs get
committed): it comes from the environment variable named by `api_key_env` (default `OPENAI_API_KEY`) or,
failing that, from a `.env` file. The key is kept out of every repr, and `redact` scrubs it from any text
that might end up in a score row, a log or an error message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOCAL_PLACEHOLDER_KEY = "no-key-needed"  # local servers ignore the key, but the client insists on one
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Endpoint:
    model: str
    base_url: str | None
    api_key: str | None = field(default=None, repr=False)
    key_source: str = "none"  # where the key came from, for messages (never the key itself)
    api_key_env: str = "OPENAI_API_KEY"

    @property
    def host(self) -> str:
        """Host, port and path of the endpoint, without credentials or query: part of the cache key."""
        parts = urlsplit(self.base_url or DEFAULT_BASE_URL)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{host}{port}{parts.path.rstrip('/')}"

    def unavailable_reason(self) -> str | None:
        """None when calls can be made; else why not and how to enable it (for a pytest skip)."""
        if self.api_key or self.base_url:
            return None
        return (
            f"no LLM endpoint configured: set {self.api_key_env} in the environment or in a .env file "
            "(for OpenAI), or `base_url` in the judge's options or OPENAI_BASE_URL (for a local or "
            "self-hosted OpenAI-compatible server such as vLLM, Ollama or LM Studio)"
        )

    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key and self.api_key != LOCAL_PLACEHOLDER_KEY else ()


def find_env_file(env_file: str | os.PathLike[str] | None) -> Path | None:
    """The `.env` file to read: the given path (must exist), else `.env` in the working directory or above."""
    if env_file is not None:
        path = Path(env_file).expanduser()
        if not path.is_file():
            raise ValueError(f"llm judge option env_file = {str(env_file)!r}: file not found (working directory {Path.cwd()})")
        return path
    try:
        from dotenv import find_dotenv
    except ImportError:  # without the `llm` extra: no .env support, the environment still works
        return None
    found = find_dotenv(usecwd=True)
    return Path(found) if found else None


def resolve_endpoint(
    *,
    model: str,
    base_url: str | None,
    api_key_env: str = "OPENAI_API_KEY",
    env_file: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Endpoint:
    """Key and base URL from the environment first, then the `.env` file (which is read, not exported)."""
    environ = dict(os.environ if environ is None else environ)
    dotenv: dict[str, str | None] = {}
    path = find_env_file(env_file)
    if path is not None:
        from dotenv import dotenv_values

        dotenv = dict(dotenv_values(path))
    key, source = environ.get(api_key_env) or None, f"{api_key_env} (environment)"
    if key is None and dotenv.get(api_key_env):
        key, source = dotenv[api_key_env], f"{api_key_env} ({path})"
    if base_url is None:
        base_url = environ.get("OPENAI_BASE_URL") or dotenv.get("OPENAI_BASE_URL") or None
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"llm judge option base_url = {base_url!r} is not an http(s) URL, e.g. 'http://localhost:8000/v1'")
        if parts.username or parts.password:
            raise ValueError("llm judge option base_url must not contain credentials; put the key in the environment")
    if key is None:
        source = "none"
    return Endpoint(model=model, base_url=base_url, api_key=key, key_source=source, api_key_env=api_key_env)


def make_client(endpoint: Endpoint, *, timeout: float) -> Any:
    """A synchronous `openai.OpenAI` client, thread-safe, with the client's own retries off (see ratelimit)."""
    import openai  # imported on first use: `import lora_harness` stays light

    return openai.OpenAI(
        api_key=endpoint.api_key or LOCAL_PLACEHOLDER_KEY,
        base_url=endpoint.base_url or DEFAULT_BASE_URL,
        timeout=timeout,
        max_retries=0,
    )


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret in `text` with `***` (for error messages that quote a server's reply)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
