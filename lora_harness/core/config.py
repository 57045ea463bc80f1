"""The eval config (`evals/lora_eval.toml`): typed models, loading, and errors a person can act on.

Validation happens once, up front, so that a typo in a threshold name fails before any image is judged
rather than silently gating nothing. Relative paths are resolved against the config file's folder, so a
config means the same thing from any working directory.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from pydantic import (
    BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError, field_validator, model_validator,
)

from lora_harness.checks.settings import DiversityConfig, LeakageConfig, MemorizationConfig, StrengthConfig
from lora_harness.generation.settings import PipelineConfig
from lora_harness.core.images import DEFAULT_PIXEL_LIMIT
from lora_harness.sources import DEFAULT_SOURCE_KIND, SOURCE_KINDS, Source


class ConfigError(ValueError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(_Model):
    name: str = Field("lora-eval", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    report_dir: Path = Path("reports")
    image_pixel_limit: int = Field(DEFAULT_PIXEL_LIMIT, gt=0)


class PersonConfig(_Model):
    references: list[Path] = []
    trigger: str | None = None
    description: str | None = None


class JudgeConfig(_Model):
    name: str
    options: dict[str, Any] = {}


class Threshold(_Model):
    """Bounds for one metric: per image, and for a checkpoint's aggregate over its images.

    `image` / `checkpoint` are minimums; `image_max` / `checkpoint_max` are maxima, for lower-is-better
    metrics (`face_distance`, drift, similarity to training images). A metric may have both.

    `on = "ci"` (default) decides a checkpoint bound three ways with the mean's confidence interval:
    pass when the whole interval is on the right side of it (at or above a minimum, at or below a
    maximum), fail when the whole interval is on the wrong side, inconclusive when it straddles (the
    evidence cannot tell). `"ci_low"` fails unless the interval's conservative end clears the bound (the
    lower bound for a minimum, the upper bound for a maximum; never inconclusive); `"mean"` compares the
    point estimate alone, so near the bound its verdict flips between identical runs.
    """

    image: float | None = None
    checkpoint: float | None = None
    image_max: float | None = None
    checkpoint_max: float | None = None
    on: Literal["ci", "ci_low", "mean"] = "ci"

    @model_validator(mode="after")
    def _max_not_below_min(self) -> "Threshold":
        for level in ("image", "checkpoint"):
            minimum, maximum = getattr(self, level), getattr(self, f"{level}_max")
            if minimum is not None and maximum is not None and maximum < minimum:
                raise ValueError(
                    f"{level}_max = {maximum:g} is below {level} = {minimum:g} (the minimum): no value could pass; "
                    f"set {level}_max >= {level}, or drop one of them"
                )
        return self

    @property
    def has_image_bounds(self) -> bool:
        return self.image is not None or self.image_max is not None

    @property
    def has_checkpoint_bounds(self) -> bool:
        return self.checkpoint is not None or self.checkpoint_max is not None

    @property
    def has_bounds(self) -> bool:
        return self.has_image_bounds or self.has_checkpoint_bounds


GateSpec = Literal["latest", "all", "best"] | list[int]


class GateConfig(_Model):
    checkpoints: GateSpec = "latest"
    # What a gated test does when the evidence cannot decide (README "Verdicts"): fail (default), pass, xfail.
    inconclusive: Literal["fail", "pass", "xfail"] = "fail"
    # Adaptive judging: an inconclusive checkpoint gets more judge repeats, in rounds, until decided or spent.
    adaptive: bool = False
    max_repeats: int = Field(16, ge=1, le=50)  # per image, the first answer included

    @field_validator("checkpoints", mode="wrap")
    @classmethod
    def _one_message(cls, value: Any, handler: Any) -> Any:
        """The union would report one error per branch; one sentence is clearer."""
        allowed = "must be 'latest', 'all', 'best' or a list of training steps such as [800, 1000]"
        if isinstance(value, list) and not value:
            raise ValueError(f"an empty list gates nothing; {allowed}")
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(allowed) from None


class ReportConfig(_Model):
    """How `report.html` shows images: embedded thumbnails keep one portable file; links keep it small."""

    images: Literal["embed", "link"] = "embed"  # link: thumbnails under <run>/thumbs/, linked relatively
    thumbnail_px: int = Field(256, ge=32, le=2048)  # longest side of a thumbnail
    # identity map projection (README "Identity beyond one score per image"): pca (numpy, always), tsne
    # (scikit-learn) or umap (umap-learn) when installed; a missing package falls back to PCA, saying so
    identity_map: Literal["pca", "tsne", "umap"] = "pca"


class StatsConfig(_Model):
    """Interval settings for every verdict (README "Verdict statistics").

    `confidence` is two-sided; a gate passes only when the whole interval clears its minimum, so a
    checkpoint truly at its minimum passes at most (1 - confidence) / 2 of the time. The default 0.98 keeps
    that under 1% even for skewed judge scores, where the nominal 2.5% of a 95% interval measured 2.8%.
    `sd_floor` is the smallest spread assumed for scores in [0, 1]. `resamples`/`seed` drive the bootstrap
    of the best-checkpoint probabilities (fixed seed: reruns give the same numbers).
    """

    confidence: float = Field(0.98, gt=0, lt=1)
    sd_floor: float = Field(0.02, ge=0, le=0.5)
    resamples: int = Field(2000, ge=100, le=1_000_000)
    seed: int = 0


class BaselineConfig(_Model):
    """What candidates are compared with: another LoRA of this run, or a stored run (folder or scores.csv)."""

    lora: str | None = None  # a LoRA of this run; every other LoRA is a candidate
    run: Path | None = None  # reports/<run> folder (its scores store or scores.csv), or a wide scores CSV
    loraname: str | None = None  # which LoRA of the stored run (default: the candidate's name, or its only one)
    step: int | None = None  # baseline step (default: the baseline LoRA's gated checkpoint / the same step)
    metrics: list[str] | None = None  # default: the metrics in `margins`, else every metric
    # non-inferiority margin for metrics not in `margins`; None: the default for the metric kind
    # (verdicts.baseline.default_margin: 0.05 for scores in [0, 1], 0.10 for 0/1 metrics)
    margin: float | None = Field(None, ge=0)
    margins: dict[str, float] = {}

    @model_validator(mode="after")
    def _one_source(self) -> "BaselineConfig":
        if (self.lora is None) == (self.run is None):
            raise ValueError("set exactly one of `lora` (a LoRA of this run) or `run` (a stored run folder or scores CSV)")
        if self.lora is not None and self.loraname is not None:
            raise ValueError("`loraname` picks a LoRA of a stored `run`; with `lora` leave it out")
        negative = sorted(metric for metric, margin in self.margins.items() if margin < 0)
        if negative:
            raise ValueError(f"margins must be >= 0 (the drop the gate tolerates); negative for: {', '.join(negative)}")
        return self


class SnapshotConfig(_Model):
    """How far a gated checkpoint's metric means may move from its stored syrupy snapshot."""

    tolerance: float = Field(0.02, ge=0)
    tolerances: dict[str, NonNegativeFloat] = {}  # per-metric overrides
    fail_on_improvement: bool = False  # by default only drops beyond the tolerance fail


class BestConfig(_Model):
    """The objective that picks a sweep's best checkpoint: weighted metric means, subject to minimums."""

    weights: dict[str, float] = {}  # default: every metric, weight 1
    minimums: dict[str, float] = {}


class EvalConfig(_Model):
    run: RunConfig = RunConfig()
    sources: list[Source] = Field(min_length=1)
    pipeline: PipelineConfig = PipelineConfig()  # the diffusers pipeline of generate sources
    person: PersonConfig = PersonConfig()
    judges: list[JudgeConfig] = Field(min_length=1)
    thresholds: dict[str, Threshold] = {}
    gate: GateConfig = GateConfig()
    stats: StatsConfig = StatsConfig()
    baseline: BaselineConfig | None = None
    snapshot: SnapshotConfig | None = None  # no section: test_snapshot skips, saying how to enable it
    best: BestConfig | None = None
    report: ReportConfig = ReportConfig()
    leakage: LeakageConfig | None = None  # LoRA-specific checks (lora_harness.checks)
    strength: StrengthConfig | None = None
    memorization: MemorizationConfig | None = None
    diversity: DiversityConfig | None = None  # set-level metrics per checkpoint (lora_harness.checks.diversity)
    path: Path | None = Field(None, exclude=True)  # where it was loaded from, for messages

    @model_validator(mode="after")
    def _unique_judges(self) -> "EvalConfig":
        names = [judge.name for judge in self.judges]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"judge(s) listed twice: {', '.join(repeated)}")
        return self

    @property
    def run_dir(self) -> Path:
        return self.run.report_dir / self.run.name


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest choice, or nothing: one wording for every misspelt name."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_metric_names(key: str, names: Iterable[str], produced: Sequence[str]) -> None:
    """Metric names in a section (`best.weights`, `snapshot.tolerances`, ...) must be ones the judges produce:
    a typo would otherwise silently weigh, tolerate or compare nothing."""
    unknown = sorted(set(names) - set(produced))
    if unknown:
        raise ConfigError(
            f"{key} names metric(s) {', '.join(unknown)} that no configured judge produces: "
            + "; ".join(f"{key}.{name}{did_you_mean(name, produced)}" for name in unknown)
            + f"; the judges produce: {', '.join(produced)}; fix the name, or add the [[judges]] entry that produces it"
        )


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """Read, override (dotted keys such as `run.report_dir`), resolve paths and validate a config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path}; pass --lora-config PATH or create evals/lora_eval.toml "
            "(see the README's Configuration section)"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        try:
            _set_dotted(data, dotted, value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return parse_config(data, base_dir=path.parent.resolve(), source=path)


def parse_config(data: dict[str, Any], *, base_dir: Path, source: Path | str = "<config>") -> EvalConfig:
    try:
        config = EvalConfig.model_validate({**data, "path": source if isinstance(source, Path) else None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    return _resolve_paths(config, base_dir)


def _resolve_paths(config: EvalConfig, base: Path) -> EvalConfig:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p)).resolve()

    return config.model_copy(
        update={
            "run": config.run.model_copy(update={"report_dir": resolve(config.run.report_dir)}),
            "sources": [s.resolved(resolve) for s in config.sources],
            "pipeline": config.pipeline.resolved(base),
            "judges": [_resolve_judge_paths(j, base) for j in config.judges],
            "person": config.person.model_copy(update={"references": [resolve(r) for r in config.person.references]}),
            "baseline": config.baseline and config.baseline.model_copy(update={"run": resolve(config.baseline.run)}),
            "memorization": config.memorization and config.memorization.model_copy(
                update={"training_dir": resolve(config.memorization.training_dir)}
            ),
        }
    )


def _resolve_judge_paths(judge: JudgeConfig, base: Path) -> JudgeConfig:
    """Judge options that name files, relative to the config file like every other path in it.

    `env_file` is always a path. `model` may be a folder or a name (a hub id, or an API model such as
    `gpt-4o`), so it becomes a path only when it is one: it exists beside the config, or it is written
    as one (`./`, `../`). Otherwise the judge resolves it as before, from the working directory or
    the hub.
    """
    options = dict(judge.options)
    env_file = options.get("env_file")
    if isinstance(env_file, str) and env_file.strip():
        path = Path(env_file).expanduser()
        options["env_file"] = str(path if path.is_absolute() else (base / path).resolve())
    model = options.get("model")
    if isinstance(model, str) and model.strip():
        path = Path(model.strip()).expanduser()
        candidate = path if path.is_absolute() else base / path
        written_as_path = model.strip().startswith(("./", "../", ".\\", "..\\"))
        if not path.is_absolute() and (candidate.exists() or written_as_path):
            options["model"] = str(candidate.resolve())
    return judge.model_copy(update={"options": options})


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):  # e.g. `gate = "latest"` in the file and --gate on the command line
            raise ConfigError(
                f"cannot apply the override {dotted}: `{key}` in the config is not a table; write it as [{key}]"
            )
    node[leaf] = value


_FIELDS_BY_SECTION = {
    "": EvalConfig.model_fields,
    "run": RunConfig.model_fields,
    "sources": SOURCE_KINDS[DEFAULT_SOURCE_KIND].model_fields,
    "pipeline": PipelineConfig.model_fields,
    "person": PersonConfig.model_fields,
    "judges": JudgeConfig.model_fields,
    "thresholds": Threshold.model_fields,
    "gate": GateConfig.model_fields,
    "stats": StatsConfig.model_fields,
    "baseline": BaselineConfig.model_fields,
    "snapshot": SnapshotConfig.model_fields,
    "best": BestConfig.model_fields,
    "report": ReportConfig.model_fields,
    "leakage": LeakageConfig.model_fields,
    "strength": StrengthConfig.model_fields,
    "memorization": MemorizationConfig.model_fields,
    "diversity": DiversityConfig.model_fields,
}


def _describe(exc: ValidationError, source: Path | str) -> str:
    """pydantic's errors, rewritten as `file: key: problem (got value); allowed ...` lines."""
    lines = [f"{source}: invalid config ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        parts = [p for p in error["loc"] if not str(p).startswith(("function-", "literal[")) and p not in SOURCE_KINDS]
        loc = ".".join(str(part) for part in parts)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            section = str(error["loc"][0]) if len(error["loc"]) > 1 else ""
            fields = _FIELDS_BY_SECTION.get(section, {})
            if section == "sources" and len(error["loc"]) > 3 and error["loc"][2] in SOURCE_KINDS:
                fields = SOURCE_KINDS[error["loc"][2]].model_fields  # the tag of the source's kind
            known = [name for name in fields if section or name != "path"]
            close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            message = f"unknown key{hint}; allowed keys: {', '.join(known)}"
        elif "input" in error and error["type"] != "missing" and loc:  # top level: the whole config (secrets)
            message = f"{message} (got {error['input']!r})"
        lines.append(f"  {loc or '(top level)'}: {message}")
    return "\n".join(lines)
