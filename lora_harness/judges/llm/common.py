"""What both LLM judges share: endpoint, call runner, limiter, cache and lazily encoded images.

One instance lives for the whole pytest process, so the rate limiter's windows and the `openai` client's
connection pool carry over from one checkpoint's batch to the next.
"""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lora_harness.judges.base import JudgeContext, Score
from lora_harness.judges.llm.cache import AnswerCache
from lora_harness.judges.llm.calls import CallRunner, CallSettings
from lora_harness.judges.llm.client import Endpoint, make_client, resolve_endpoint
from lora_harness.judges.llm.cost import Prices
from lora_harness.judges.llm.edges import EDGE_VERSION, edge_map
from lora_harness.judges.llm.encoding import (
    estimated_image_tokens,
    fit_max_side,
    jpeg_data_url,
    pixel_hash,
    png_bilevel_data_url,
)
from lora_harness.judges.llm.options import LlmOptions
from lora_harness.judges.llm.ratelimit import RateLimiter, RetryPolicy
from lora_harness.judges.llm.runwide import Claims, FatalFlag, RequestSlots, SharedRateLimiter, run_folder
from lora_harness.judges.llm.rubrics import RUBRIC_VERSION
from lora_harness.judges.model_loading import ModelUnavailable

CACHE_SUBDIR = "llm"
_PACKAGES = (("openai", "openai"), ("cv2", "opencv-python-headless"), ("xxhash", "xxhash"))


class EncodedImage:
    """An image's data URL and edge-map data URL, computed once on first use by any worker thread."""

    def __init__(self, pixels: np.ndarray, options: LlmOptions) -> None:
        self.pixels = pixels
        self.options = options
        self._lock = threading.Lock()
        self._url: str | None = None
        self._edges: str | None = None

    def url(self) -> str:
        with self._lock:
            if self._url is None:
                self._url = jpeg_data_url(self.pixels, max_side=self.options.max_side, quality=self.options.jpeg_quality)
            return self._url

    def edges_url(self) -> str:
        """Edges of the image at the size it is sent, so both pictures line up for the model."""
        with self._lock:
            if self._edges is None:
                edges = edge_map(fit_max_side(self.pixels, self.options.max_side))
                if self.options.edges_format == "png":
                    self._edges = png_bilevel_data_url(edges)
                else:
                    self._edges = jpeg_data_url(edges, max_side=self.options.max_side, quality=self.options.jpeg_quality)
            return self._edges

    def tokens(self) -> int:
        h, w = self.pixels.shape[:2]
        return estimated_image_tokens(h, w, max_side=self.options.max_side, detail=self.options.detail)


class LlmJudgeBase:
    """Endpoint resolution, the call runner and shared request fields; subclasses build the plans."""

    name: str
    version: str = RUBRIC_VERSION

    def __init__(self, options: LlmOptions, *, client_factory: Callable[[Endpoint], Any] | None = None) -> None:
        self.options = options
        self.endpoint = resolve_endpoint(
            model=options.model, base_url=options.base_url, api_key_env=options.api_key_env, env_file=options.env_file
        )
        self._client_factory = client_factory or (lambda endpoint: make_client(endpoint, timeout=options.timeout))
        self._runner: CallRunner | None = None
        self._runner_key: tuple[Any, ...] | None = None
        self._host = self.endpoint.host
        self._references: dict[str, EncodedImage] = {}
        self._lock = threading.Lock()

    def unavailable(self) -> str | None:
        """Why this judge cannot run here (no endpoint configured), or None. The harness skips on it."""
        return self.endpoint.unavailable_reason()

    def require_endpoint(self) -> None:
        """Raise ModelUnavailable (the harness skips, quoting it) when packages or an endpoint are missing."""
        missing = [name for module, name in _PACKAGES if importlib.util.find_spec(module) is None]
        if missing:
            raise ModelUnavailable(f"{self.name}: needs {', '.join(missing)}: pip install 'lora-harness[llm]'")
        reason = self.unavailable()
        if reason is not None:
            raise ModelUnavailable(f"{self.name}: {reason}")

    def runner(self, context: JudgeContext) -> CallRunner:
        """One runner per (cache folder, worker count, run). Under xdist (`worker_count > 1`) its request slots,
        rate limits and fatal-error stop are the run's, shared through files in the run folder (`runwide`), so
        `max_in_flight`, `requests_per_minute` and `tokens_per_minute` are exact totals for the run."""
        key = (context.cache_dir, context.worker_count, context.run_id)
        with self._lock:
            if self._runner is None or self._runner_key != key:
                o = self.options
                folder = run_folder(context.cache_dir, self.name) if context.worker_count > 1 else None
                if folder is not None:
                    limiter: RateLimiter = SharedRateLimiter(folder, o.requests_per_minute, o.tokens_per_minute)
                else:
                    limiter = RateLimiter(o.requests_per_minute, o.tokens_per_minute)
                flag = folder / f"fatal-{context.run_id}.txt" if folder is not None and context.run_id else None
                cache = None
                if o.cache and context.cache_dir is not None:
                    cache = AnswerCache(Path(context.cache_dir) / CACHE_SUBDIR)
                settings = CallSettings(
                    temperature=o.temperature,
                    max_tokens=o.max_tokens,
                    max_tokens_param=o.max_tokens_param,
                    max_in_flight=o.max_in_flight,  # threads per process; the slots bound the run's total
                    answer_retries=o.answer_retries,
                    retry=RetryPolicy(o.max_retries, o.backoff_initial, o.backoff_max, o.max_retry_after),
                    prices=Prices(o.price_input_per_mtok, o.price_output_per_mtok),
                )
                previous = self._runner
                self._runner = CallRunner(
                    endpoint=self.endpoint,
                    client_factory=lambda: self._client_factory(self.endpoint),
                    settings=settings,
                    limiter=limiter,
                    cache=cache,
                    judge_name=self.name,
                    slots=RequestSlots(o.max_in_flight, folder),
                    fatal=FatalFlag(flag),
                    claims=Claims(folder / f"claims-{context.run_id}") if cache is not None and flag is not None else None,
                    run_id=context.run_id,
                )
                if previous is not None:
                    if previous._client is not None:
                        self._runner._client = previous._client  # keep the connection pool
                    previous.close()
                self._runner_key = key
            return self._runner

    @property
    def prefetch_target(self) -> int:
        """How many of its own requests a process keeps queued when judging ahead: enough to fill every
        slot of the run again as answers come in, not so many that a test waits behind a long queue."""
        return 2 * self.options.max_in_flight if self.options.judge_ahead else 0

    def backlog(self, context: JudgeContext) -> int:
        return self.runner(context).backlog

    def collect(self, futures: Sequence["Future[list[Score]]"], context: JudgeContext) -> list[list[Score]]:
        """Wait for `submit_batch` futures, in order; then warn about answers the cache could not keep."""
        results = [future.result() for future in futures]
        self.runner(context).report_failed_writes()
        return results

    def references(self, context: JudgeContext) -> list[tuple[str, EncodedImage]]:
        """The first `max_references` reference photos with their pixel hashes, encoded once per process."""
        out = []
        for image in list(context.reference_images)[: self.options.max_references]:
            pixels = np.ascontiguousarray(image)
            digest = pixel_hash(pixels)
            with self._lock:
                encoded = self._references.setdefault(digest, EncodedImage(pixels, self.options))
            out.append((digest, encoded))
        return out

    def request_fields(self, repeat: int, rubric_digest: str) -> dict[str, Any]:
        """Cache-key fields common to every call of this judge (never the API key). `rubric_digest` covers
        only the wording this call sends (`rubrics.group_digest` / `pairwise_digest`)."""
        o = self.options
        return {
            "judge": self.name,
            "model": o.model,
            "host": self._host,
            "rubric_version": RUBRIC_VERSION,
            "rubric_digest": rubric_digest,
            "repeat": repeat,
            "seed": None if o.seed is None else o.seed + repeat,
            "temperature": o.temperature,
            "encoding": [o.max_side, o.jpeg_quality, o.detail, o.edges_format],
            "edges": EDGE_VERSION,
        }

    def seed(self, repeat: int) -> int | None:
        return None if self.options.seed is None else self.options.seed + repeat


def check_rgb(image: Any) -> tuple[np.ndarray | None, str | None]:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        return None, f"expected an RGB uint8 array (H, W, 3), got {array.dtype} {array.shape}"
    return np.ascontiguousarray(array), None


def text_tokens(*texts: str) -> int:
    """~4 characters per token: only an estimate for the rate limiter."""
    return sum(len(t) for t in texts) // 4 + 50


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return float(mean), float(std)
