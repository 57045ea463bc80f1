"""The judges' options (`[[judges]] options = {...}` in the eval config), validated with readable errors.

Everything about the endpoint, sampling, concurrency, retries, prices and image encoding is here; nothing
secret is: an `api_key` option is refused with a pointer to the environment variable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class LlmOptions(BaseModel):
    """Options shared by `llm_rubric` and `llm_pairwise`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # endpoint
    model: str = Field("gpt-4o", min_length=1)
    base_url: str | None = None  # None: OPENAI_BASE_URL, else OpenAI
    api_key_env: str = Field("OPENAI_API_KEY", min_length=1)
    env_file: str | None = None  # None: `.env` in the working directory or a parent, if any
    # sampling
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(1500, gt=0)
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    seed: int | None = 0  # repeat r is asked with seed + r; `seed = false` in TOML (no null there): send none
    repeats: int = Field(1, ge=1, le=50)
    timeout: float = Field(60.0, gt=0.0)
    # images
    max_side: int = Field(1024, ge=64, le=8192)
    jpeg_quality: int = Field(90, ge=10, le=100)
    detail: Literal["auto", "low", "high"] = "auto"
    edges_format: Literal["png", "jpeg"] = "png"  # "jpeg": the study's encoding of the edge map, bit for bit
    max_references: int = Field(1, ge=1, le=8)
    # throughput and failures
    max_in_flight: int = Field(8, ge=1, le=512)  # for the whole run: split across xdist workers
    requests_per_minute: float | None = Field(None, gt=0.0)  # account-wide: split across workers
    tokens_per_minute: float | None = Field(None, gt=0.0)
    max_retries: int = Field(5, ge=0, le=100)
    backoff_initial: float = Field(0.5, ge=0.0)
    backoff_max: float = Field(30.0, ge=0.0)
    max_retry_after: float = Field(120.0, ge=0.0)
    answer_retries: int = Field(2, ge=0, le=20)
    judge_ahead: bool = True  # submit the next checkpoints' requests while a test waits for its own
    # money and reuse
    price_input_per_mtok: float | None = Field(None, ge=0.0)  # USD per million input tokens
    price_output_per_mtok: float | None = Field(None, ge=0.0)
    cache: bool = True

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("api_key", "key", "openai_api_key"):
                if key in data:
                    raise ValueError(
                        f"'{key}' does not belong in the config (configs get committed); put the key in the "
                        "environment variable named by api_key_env (default OPENAI_API_KEY) or in a .env file"
                    )
        return data

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_false_means_none(cls, value: Any) -> Any:
        """TOML has no null, so `seed = false` switches the seed off (for endpoints that reject the field)."""
        if value is False:
            return None
        if value is True:
            raise ValueError("seed = true is not a seed: give an integer, or false to send no seed")
        return value

    @model_validator(mode="after")
    def _repeats_need_randomness(self) -> "LlmOptions":
        if self.repeats > 1 and self.temperature == 0.0:
            raise ValueError(
                f"repeats = {self.repeats} with temperature = 0 asks for the same greedy answer {self.repeats} "
                "times; set temperature > 0 (e.g. 0.7) so the repeats sample the judge's noise"
            )
        return self


class RubricOptions(LlmOptions):
    mode: Literal["combined", "per_criterion"] = "combined"
    criteria: list[str] | None = None  # metric names or short keys; None: all seven


class PairwiseOptions(LlmOptions):
    baseline: str  # "<loraname or source name>[@<step>|@latest]"
    candidate: str
    margin: float = Field(0.1, ge=0.0, lt=0.5)  # fail when mean preference for the candidate < 0.5 - margin


def parse_options(model: type[BaseModel], judge: str, options: dict[str, Any]) -> Any:
    """Validate options; errors name the judge, the option, the bad value and what is allowed."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        lines = [f"{judge} judge: invalid options ({exc.error_count()} problem(s)):"]
        known = ", ".join(model.model_fields)
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "options"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown option; allowed options: {known}"
            elif error["type"] != "missing" and "input" in error and error["loc"]:
                message = f"{message} (got {error['input']!r})"
            lines.append(f"  {where}: {message}")
        raise ValueError("\n".join(lines)) from None
