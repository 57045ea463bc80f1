"""Keep secrets out of everything a report writes (HTML, allure attachments, the run manifest).

Judges should never put an API key into a score's raw values or error text, but an exception message from a
client library can quote a header or a URL with a key in it. Every string a report shows passes through
`redact`, which removes the values of secret-looking environment variables and key-shaped tokens.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

REDACTED = "[redacted]"
# Environment variables whose values are secrets, by name.
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
# Key-shaped tokens even when they did not come from the environment (OpenAI, Hugging Face, bearer headers).
_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{16,}"),
    re.compile(r"\b[Bb][Ee][Aa][Rr][Ee][Rr]\s+[A-Za-z0-9_\-.=]{8,}"),
)
_MIN_SECRET_LENGTH = 6  # shorter values ("1", "true") would redact ordinary words


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables named like secrets, longest first (so overlaps redact fully)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v.strip()) >= _MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


class Redactor:
    """Replaces secrets in strings and in nested JSON-like values; built once per report."""

    def __init__(self, secrets: Iterable[str] | None = None) -> None:
        self.secrets = list(secret_values() if secrets is None else secrets)
        # one alternation, one pass per string: reports redact tens of thousands of strings
        alternatives = [re.escape(secret) for secret in self.secrets] + [p.pattern for p in _SECRET_PATTERNS]
        self._pattern = re.compile("|".join(f"(?:{a})" for a in alternatives))

    def text(self, value: str) -> str:
        return self._pattern.sub(REDACTED, value)

    def value(self, value: Any) -> Any:
        """Strings redacted, containers walked, everything else returned as is."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value


def redact(value: Any) -> Any:
    """One-off redaction with the current environment's secrets."""
    return Redactor().value(value)
