"""Run-wide state of one pytest process: config, cases, judges, and scoring with recording.

Kept free of pytest so unit tests drive it directly; the plugin (`lora_harness.plugin`) only wires it to hooks and fixtures.
Scoring records each judge's scores as soon as they exist, so a later judge's crash loses nothing.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lora_harness.verdicts.baseline import BaselinePlan
from lora_harness.verdicts.best_checkpoint import BestChoice, validate_best_section, choose_best
from lora_harness.core.cases import Checkpoint, EvalCase, checkpoint_order
from lora_harness.checks.extra_cases import expand_check_cases, owner
from lora_harness.checks.config_validation import validate_check_sections
from lora_harness.core.config import ConfigError, EvalConfig, validate_metric_names, did_you_mean
from lora_harness.core.stale_sections import stale_sections, without_stale
from lora_harness.verdicts.thresholds import Finding, checkpoint_verdict, gated_checkpoints, image_verdict
from lora_harness.verdicts.outcome import Policy, Verdict
from lora_harness.verdicts.sequential import decision_stats, repeat_rounds
from lora_harness.core.images import ImageError, load_rgb
from lora_harness.judges import Judge, JudgeContext, Score, create_judge
from lora_harness.judges.base import Direction, UnknownJudgeError, error_scores, judge_many, judge_directions
from lora_harness.judges.model_loading import UNAVAILABLE_KEY, ModelUnavailable
from lora_harness.sources import baseline_names, collect_cases
from lora_harness.sources.generate import IMAGES_DIRNAME, GeneratedCase
from lora_harness.sources.samples import IMAGE_SUFFIXES
from lora_harness.verdicts.stats import CheckpointAggregates, aggregate
from lora_harness.run.store import ScoreStore, latest_rows

if TYPE_CHECKING:
    from lora_harness.generation.engine import ImageGenerator

# Decoded images kept per process: a checkpoint's images (e.g. 20 at 1024 px = 63 MB) stay decoded from judging
# to their tests and thumbnails; beyond it the oldest go, and a later use decodes again.
IMAGE_CACHE_BYTES = 96 * 2**20


class Harness:
    def __init__(
        self, config: EvalConfig, *, run_id: str, worker: str = "main", worker_count: int = 1,
        drop_stale: bool = False, allow_incomplete: bool = False,
    ) -> None:
        """`drop_stale`: the sources came from the command line (`--lora-samples`), so sections naming
        LoRAs of the config's own sources are skipped with a note (`self.notes`) instead of failing.

        Every config mistake found here (they need the cases or the judges, so pydantic cannot see them)
        is raised naming the config file, as the schema errors are."""
        try:
            self._build(config, run_id=run_id, worker=worker, worker_count=worker_count, drop_stale=drop_stale,
                        allow_incomplete=allow_incomplete)
        except ValueError as exc:  # ConfigError, SampleFolderError, PromptFileError, a judge's option error
            raise in_config_file(exc, config) from None

    def _build(
        self, config: EvalConfig, *, run_id: str, worker: str, worker_count: int, drop_stale: bool, allow_incomplete: bool
    ) -> None:
        self.config = config
        self.policy = Policy(config.gate.inconclusive, allow_incomplete)
        self.stats = decision_stats(config.gate, config.stats)  # adaptive judging spends confidence over looks
        self.run_id = run_id
        self.worker = worker
        self.worker_count = worker_count
        self.cases = collect_cases(config)
        self.notes: list[str] = []
        if drop_stale:
            stale = stale_sections(config, {c.loraname for c in self.cases}, {c.variant for c in self.cases if c.variant})
            if stale:
                config = self.config = without_stale(config, stale)
                self.notes = [s.note for s in stale]
        # Leakage / strength images (lora_harness.checks): judged and stored, but not under the thresholds.
        self.check_cases = expand_check_cases(self.cases, config)
        self.checkpoints = sorted(
{Checkpoint.of(case) for case in self.cases}, key=checkpoint_order)
        # gate "best" depends on scores: chosen per LoRA on first use (`best_choice`), not here.
        # Baselines (the base model, a previous LoRA) are references: compared with, never gated.
        # The one rule (`baseline_names`), shared with the report, which sees the config but no cases.
        self.baselines = baseline_names(config.sources)
        self._gated = (
            None
            if config.gate.checkpoints == "best"
            else gated_checkpoints(self.checkpoints, config.gate.checkpoints, baselines=self.baselines)
        )
        self._best: dict[str, BestChoice] = {}
        if isinstance(config.gate.checkpoints, list):
            steps = {c.training_step for c in self.checkpoints}
            unknown = sorted(set(config.gate.checkpoints) - steps)
            if unknown:
                raise ConfigError(
                    f"gate.checkpoints lists step(s) {unknown} that no source has; steps found: {sorted(steps)}; "
                    "list some of those, or use \"latest\", \"all\" or \"best\""
                )
        judges = [_create_judge(index, j.name, j.options) for index, j in enumerate(config.judges)]
        # Pair judges (`compare_batch`, e.g. llm_pairwise) score two images at once: comparisons, not cases.
        self.judges: list[Judge] = [j for j in judges if not hasattr(j, "compare_batch")]
        self.pair_judges: list[Any] = [j for j in judges if hasattr(j, "compare_batch")]
        self._pairwise: list[Any] | None = None
        self._check_threshold_metrics()
        validate_best_section(config.best, self.metrics, self.directions)
        if config.snapshot is not None:
            validate_metric_names("snapshot.tolerances", config.snapshot.tolerances, self.metrics)
        validate_check_sections(config, self.metrics)
        names = sorted({c.loraname for c in self.checkpoints})
        if config.baseline is not None and config.baseline.lora is not None and config.baseline.lora not in names:
            raise ConfigError(
                f"baseline.lora = {config.baseline.lora!r}: not a LoRA of this run"
                f"{did_you_mean(config.baseline.lora, names)}; LoRAs found: {', '.join(names)}; "
                "name one of them, or remove [baseline]"
            )
        self.baseline = (
            None if config.baseline is None
            else BaselinePlan(config.baseline, self.checkpoints, self.metrics, stats=self.stats, directions=self.directions)
        )
        self.store = ScoreStore(config.run_dir, run_id=run_id, worker=worker)
        self._scores: dict[str, dict[str, Score]] = {}
        self._recorded: dict[str, dict[str, Score]] = {}  # lora_record scores of cases not judged yet
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._image_bytes = 0
        self._context: JudgeContext | None = None
        self._generator: ImageGenerator | None = None
        self._generators: dict[str | None, ImageGenerator] = {}
        self._generation_groups: dict[str, str] | None = None
        self._groups: dict[Checkpoint, str] | None = None
        # Judging ahead (judges with `submit_batch`, e.g. llm_rubric): the checkpoints this session tests, in
        # the order its tests run (set by the plugin after collection); per judge, the scores already asked
        # for by case key, and how far along that order it has submitted.
        self.stream_order: list[Checkpoint] = []
        self._ahead: dict[str, dict[str, Any]] = {}
        self._stream_cursor: dict[str, int] = {}

    @property
    def metrics(self) -> list[str]:
        return [metric for judge in self.judges for metric in judge.metrics]

    @property
    def directions(self) -> dict[str, Direction]:
        """Each metric's direction ("higher", "lower" or "none"), as the judge producing it declares."""
        return {metric: d for judge in self.judges for metric, d in judge_directions(judge).items()}

    def _check_threshold_metrics(self) -> None:
        unknown = sorted(set(self.config.thresholds) - set(self.metrics))
        if unknown:
            raise ConfigError(
                f"thresholds for metric(s) {', '.join(unknown)} that no configured judge produces: "
                + "; ".join(f"[thresholds.{name}]{did_you_mean(name, self.metrics)}" for name in unknown)
                + f"; the judges produce: {', '.join(self.metrics)}; rename the table, or add the [[judges]] entry "
                "that produces the metric"
            )

    def cases_of(self, checkpoint: Checkpoint) -> list[EvalCase]:
        return [case for case in (*self.cases, *self.check_cases) if Checkpoint.of(case) == checkpoint]

    @property
    def gated(self) -> set[Checkpoint]:
        """The gated checkpoints; with gate 'best' this scores every LoRA's sweep to choose."""
        if self._gated is None:
            return {c for c in self.checkpoints if self.is_gated(c)}
        return self._gated

    def gated_of(self, loraname: str) -> list[Checkpoint]:
        """One LoRA's gated checkpoints in sweep order (a baseline LoRA has none)."""
        return [c for c in self.checkpoints if c.loraname == loraname and self.is_gated(c)]

    def is_gated(self, checkpoint: Checkpoint) -> bool:
        if checkpoint.loraname in self.baselines:
            return False
        if self._gated is None:
            best = self.best_choice(checkpoint.loraname).best
            return best is not None and best.checkpoint == checkpoint
        return checkpoint in self._gated

    def best_choice(self, loraname: str) -> BestChoice:
        """The `[best]` choice among one LoRA's checkpoints, from their scores (judged here if needed)."""
        if loraname not in self._best:
            mine = [c for c in self.checkpoints if c.loraname == loraname]
            means = {c: self.aggregates(c).means() for c in mine}
            values = {c: self.checkpoint_values(c) for c in mine}
            s = self.stats
            self._best[loraname] = choose_best(
                means, self.config.best, values=values, resamples=s.resamples, seed=s.seed, directions=self.directions,
            )[loraname]
        return self._best[loraname]

    def aggregates(self, checkpoint: Checkpoint) -> CheckpointAggregates:
        """Mean, std, n and CI of every metric over the checkpoint's prompts and seeds."""
        s = self.stats
        return CheckpointAggregates(checkpoint, aggregate(self.checkpoint_values(checkpoint), confidence=s.confidence, sd_floor=s.sd_floor))

    def context(self) -> JudgeContext:
        """Reference photos, decoded once per process and only when a case is judged."""
        if self._context is None:
            paths: list[Path] = []
            for ref in self.config.person.references:
                if ref.is_dir():
                    paths.extend(sorted(p for p in ref.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
                else:
                    paths.append(ref)
            images = [load_rgb(p, pixel_limit=self.config.run.image_pixel_limit) for p in paths]
            self._context = JudgeContext(
                reference_images=images,
                reference_paths=paths,
                trigger=self.config.person.trigger,
                description=self.config.person.description,
                cache_dir=self.config.run_dir / "cache",
                worker_count=self.worker_count,
                run_id=self.run_id,
            )
        return self._context

    def image(self, case: EvalCase) -> np.ndarray:
        """The case's decoded image, decoded once: judging a checkpoint keeps its images (up to
        `IMAGE_CACHE_BYTES`), so each case's test, fixtures and report thumbnail reuse the judges' pixels."""
        key = case.key
        if key in self._images:
            self._images.move_to_end(key)
            return self._images[key]
        return self._remember(key, self._decode(case))

    def _remember(self, key: str, pixels: np.ndarray) -> np.ndarray:
        """Keep decoded pixels, oldest dropped first beyond the byte budget (always the last few)."""
        self._images[key] = pixels
        self._image_bytes += pixels.nbytes
        while len(self._images) > 4 and self._image_bytes > IMAGE_CACHE_BYTES:
            _, dropped = self._images.popitem(last=False)
            self._image_bytes -= dropped.nbytes
        return pixels

    def known_scores(self, case: EvalCase) -> dict[str, Score]:
        """The case's scores this process already has (never judges): for reporting after a test."""
        return dict(self._scores.get(case.key, {}))

    def score(self, case: EvalCase) -> dict[str, Score]:
        """All metrics of a case: from this process, else this run's store (another worker), else judged now.

        Judging takes the case's whole checkpoint at once (its unscored cases), so batched and concurrent
        judges see many images per call; xdist keeps a checkpoint on one worker, so nothing is judged twice.
        """
        if case.key not in self._scores:
            self._load_stored()
        if case.key not in self._scores:
            pending = [c for c in self.cases_of(Checkpoint.of(case)) if c.key not in self._scores and c.key != case.key]
            self._judge([case, *pending])
        if case.key in self._recorded:
            self._scores[case.key].update(self._recorded.pop(case.key))
        return self._scores[case.key]

    def _load_stored(self) -> None:
        """Adopt complete score sets another process of this run already recorded."""
        by_case: dict[str, dict[str, Score]] = defaultdict(dict)
        for row in latest_rows(self.store.others_rows()):
            by_case[row.case_key][row.metric] = Score(row.metric, row.value, row.raw, row.error)
        wanted = set(self.metrics)
        for key, scores in by_case.items():
            if key not in self._scores and wanted <= set(scores):
                self._scores[key] = scores

    def _judge(self, cases: list[EvalCase]) -> None:
        items: list[tuple[EvalCase, np.ndarray]] = []
        for case in cases:
            self._scores[case.key] = {}
            try:
                items.append((case, self.image(case)))
            except ImageError as exc:
                for judge in self.judges:
                    self._record(judge, [(case, error_scores(judge, str(exc)))])
        if not items:
            return
        try:
            context = self.context()
        except ImageError as exc:
            message = f"reference photo unusable: {exc}; fix `person.references` in the config"
            for judge in self.judges:
                self._record(judge, [(case, error_scores(judge, message)) for case, _ in items])
            return
        for judge in self.judges:
            try:
                if hasattr(judge, "submit_batch"):
                    results = self._judge_streaming(judge, items, context)
                else:
                    results = judge_many(judge, items, context)
                if len(results) != len(items):
                    raise RuntimeError(f"returned {len(results)} results for {len(items)} images")
            except ModelUnavailable as exc:  # a model/package absent here: missing scores, gated tests skip
                missing = [Score(m, None, {UNAVAILABLE_KEY: str(exc)}) for m in judge.metrics]
                results = [missing] * len(items)
            except Exception as exc:  # a judge bug or outage must not lose other judges' scores
                results = [error_scores(judge, f"failed: {type(exc).__name__}: {exc}")] * len(items)
            self._record(judge, [(case, scores) for (case, _), scores in zip(items, results)])

    def _judge_streaming(self, judge: Any, items: list[tuple[EvalCase, np.ndarray]], context: JudgeContext) -> list[list[Score]]:
        """This checkpoint's scores from a judge that takes work ahead: its cases already submitted while an
        earlier checkpoint was judged are not asked again; then the judge is kept busy with the next
        checkpoints (`_submit_ahead`) while this test waits only for its own checkpoint's answers."""
        for case, _ in items:
            self._ahead.setdefault(judge.name, {}).pop(case.key, None)
        # Submitted again, now as needed: the judge shares what it has in flight or settled for these
        # cases (moving queued ones to the front) and asks only what it does not have.
        futures = judge.submit_batch(items, context)
        self._submit_ahead(judge, context)
        return judge.collect(futures, context)

    def _submit_ahead(self, judge: Any, context: JudgeContext) -> None:
        """Submit the next checkpoints of `stream_order` until the judge has `prefetch_target` requests of
        its own queued. Under xdist another worker may test them: it then finds the answers in the shared
        cache (or waits for them, see `judges.llm.runwide.Claims`), and nothing is asked twice. Generated
        cases are not judged ahead (that would generate their images out of turn); unreadable images are
        left to their own test, which records the error."""
        ahead = self._ahead.setdefault(judge.name, {})
        cursor = self._stream_cursor.get(judge.name, 0)
        try:
            while cursor < len(self.stream_order) and judge.backlog(context) < judge.prefetch_target:
                checkpoint = self.stream_order[cursor]
                cursor += 1
                items = []
                for case in self.cases_of(checkpoint):
                    if case.key in self._scores or case.key in ahead or isinstance(case, GeneratedCase):
                        continue
                    try:
                        items.append((case, load_rgb(case.image_path, pixel_limit=self.config.run.image_pixel_limit)))
                    except ImageError:
                        continue
                if items:
                    for (case, _), future in zip(items, judge.submit_batch(items, context, ahead=True)):
                        ahead[case.key] = future
        except Exception:  # e.g. no endpoint: judging ahead is an optimisation; each test reports its own
            cursor = len(self.stream_order)
        self._stream_cursor[judge.name] = cursor

    def _decode(self, case: EvalCase) -> np.ndarray:
        self._materialize(case)
        return load_rgb(case.image_path, pixel_limit=self.config.run.image_pixel_limit)

    def generator(self, device: str | None = None) -> "ImageGenerator":
        """This process's image generator (pipeline + LoRA state), created on first use: sample-folder runs and
        fully cached reruns never import torch or diffusers. `device`: the generator of that device (when
        workers share devices, see lora_harness.generation.devices); default: this worker's own device."""
        if device is None and self._generator is not None:
            return self._generator
        if device not in self._generators:
            from lora_harness.generation.engine import ImageGenerator

            pipeline = self.config.pipeline if device is None else self.config.pipeline.model_copy(update={"device": device, "devices": []})
            self._generators[device] = ImageGenerator(pipeline, images_dir=self.config.run_dir / IMAGES_DIRNAME, worker=self.worker)
        if device is None:
            self._generator = self._generators[None]
        return self._generators[device]

    def generation_groups(self, worker_count: int | None = None) -> dict[str, str]:
        """Checkpoint xdist group -> device, when more workers than devices share generation (else empty).
        `worker_count`: plan for that many workers (the controller's scheduler) instead of this run's."""
        if worker_count is not None and worker_count != self.worker_count:
            return self._plan_generation(worker_count)
        if self._generation_groups is None:
            self._generation_groups = self._plan_generation(self.worker_count)
        return self._generation_groups

    def _plan_generation(self, worker_count: int) -> dict[str, str]:
        generated = {Checkpoint.of(c) for c in self.cases if isinstance(c, GeneratedCase)}
        if not generated or worker_count <= 1:
            return {}
        from lora_harness.generation.devices import device_groups, visible_devices
        from lora_harness.run.regression_targets import xdist_groups

        self._groups = xdist_groups(self)
        return device_groups(
            {self._groups[c] for c in generated if c in self._groups}, visible_devices(self.config.pipeline), worker_count,
        )

    def _generation_device(self, case: GeneratedCase) -> str | None:
        """The device whose worker generates this case when workers share devices; None: this worker's own."""
        plan = self.generation_groups()
        if not plan or self._groups is None:
            return None
        checkpoint = owner(case)  # a leakage/strength image belongs to its LoRA's checkpoint
        return plan.get(self._groups.get(checkpoint, checkpoint.key))

    def _materialize(self, case: EvalCase) -> None:
        """A generated case's image is made (or taken from the cache) before it is read; its whole checkpoint
        at once, so a worker applies each LoRA once. Failures raise ImageError (CaseGenerationError)."""
        if isinstance(case, GeneratedCase):
            self.generator(self._generation_device(case)).materialize(case, lambda: self.cases_of(Checkpoint.of(case)))

    def _record(self, judge: Judge, results: list[tuple[EvalCase, list[Score]]]) -> None:
        """fsync one judge's scores for a batch before the next judge runs.

        The store redacts (an exception text may quote a key or an auth header) and hands back the redacted
        scores: only those are kept, since from here scores flow to failure messages, CSV, allure and reports.
        """
        for case, scores in self.store.record(results, judge=judge.name, judge_version=judge.version):
            self._scores.setdefault(case.key, {}).update({s.metric: s for s in scores})

    def record(self, case: EvalCase, score: Score, *, source: str) -> None:
        """Scores a test computes itself (the `lora_record` fixture) go through the same store.

        Recorded before the judges ran, the score waits in `_recorded`: putting a partial set into `_scores`
        would make `score(case)` believe the case was already judged.
        """
        ((_, (score,)),) = self.store.record([(case, [score])], judge=source, judge_version="test")
        if case.key in self._scores:
            self._scores[case.key][score.metric] = score
        else:
            self._recorded.setdefault(case.key, {})[score.metric] = score

    def image_verdict(self, case: EvalCase) -> tuple[Verdict, list[Finding]]:
        return image_verdict(
            self.score(case), self.config.thresholds, gated=self.is_gated(Checkpoint.of(case)),
            unavailable=self._unavailable_metrics([case]),
        )

    def checkpoint_values(self, checkpoint: Checkpoint) -> dict[str, list[float | None]]:
        """Every metric's values over the checkpoint's images (None where an image has none)."""
        values: dict[str, list[float | None]] = defaultdict(list)
        for case in self.cases_of(checkpoint):
            for metric, score in self.score(case).items():
                values[metric].append(score.value)
        return dict(values)

    def checkpoint_verdict(self, checkpoint: Checkpoint) -> tuple[Verdict, list[Finding], dict[str, list[float | None]]]:
        """The checkpoint test's verdict; with `[gate] adaptive = true` an inconclusive gated one first gets
        more judge repeats, in rounds (`verdicts.sequential`), until it is decided or the budget is spent."""
        decided = self._checkpoint_verdict(checkpoint)
        for repeats in repeat_rounds(self.config.gate)[1:]:
            verdict, findings, _ = decided
            undecided = {f.metric for f in findings if f.decision == "inconclusive"}
            if not verdict.gated or verdict.decision != "inconclusive" or not self._judge_again(checkpoint, undecided, repeats):
                break
            decided = self._checkpoint_verdict(checkpoint)
        return decided

    def _checkpoint_verdict(self, checkpoint: Checkpoint) -> tuple[Verdict, list[Finding], dict[str, list[float | None]]]:
        values = self.checkpoint_values(checkpoint)
        verdict, findings = checkpoint_verdict(
            values, self.config.thresholds, self.stats, gated=self.is_gated(checkpoint),
            unavailable=self._unavailable_metrics(self.cases_of(checkpoint)),
        )
        return verdict, findings, values

    def _judge_again(self, checkpoint: Checkpoint, metrics: set[str], repeats: int) -> bool:
        """Ask the judges of `metrics` that sample (temperature > 0) for `repeats` answers per image; earlier
        answers come from their cache. False when no such judge produces the undecided metrics."""
        configs = {j.name: j for j in self.config.judges}
        again = [
            create_judge(judge.name, {**configs[judge.name].options, "repeats": repeats})
            for judge in self.judges
            if metrics & set(judge.metrics) and getattr(getattr(judge, "options", None), "temperature", 0) > 0
        ]
        if not again:
            return False
        cases = [c for c in self.cases_of(checkpoint) if c in self.cases]
        items = []
        for case in cases:
            try:
                items.append((case, self._decode(case)))
            except ImageError:
                continue  # already recorded as that image's error
        for judge in again:
            try:
                results = judge_many(judge, items, self.context())
            except Exception as exc:  # the earlier round's scores stand; the decision stays as it was
                warnings.warn(f"lora-harness: adaptive round of {repeats} repeats for {checkpoint.key} failed: "
                              f"{self.store.redactor.text(f'{type(exc).__name__}: {exc}')}", stacklevel=2)
                return False
            self._record(judge, [(case, scores) for (case, _), scores in zip(items, results)])
        return True

    def pairwise_comparisons(self) -> list[Any]:
        """The comparisons the pair judges plan over this run's cases (candidate vs baseline checkpoint)."""
        if self._pairwise is None:
            self._pairwise = [c for judge in self.pair_judges for c in judge.comparisons(self.cases)]
        return self._pairwise

    def compare(self, comparison: Any) -> Any:
        """Judge a comparison's image pairs and record each preference under its candidate case."""
        from lora_harness.judges.llm.pairwise import ComparisonResult

        judge = next(j for j in self.pair_judges if j.name == comparison.judge)
        pairs, problems = [], []
        for base, cand in comparison.pairs:
            try:
                pairs.append((base, self._decode(base), cand, self._decode(cand)))
            except ImageError as exc:
                problems.append((cand, error_scores(judge, str(exc))[0]))
        try:
            results = judge.compare_batch(pairs, self.context()) if pairs else []
        except ModelUnavailable:
            raise
        except Exception as exc:  # a judge bug or outage: every pair gets the error, nothing is lost
            results = [error_scores(judge, f"failed: {type(exc).__name__}: {exc}")] * len(pairs)
        scored = [(cand, scores) for (_, _, cand, _), scores in zip(pairs, results)]
        # Store only: the candidate case's per-image score set (self._scores) is the case judges' business.
        recorded = self.store.record([*scored, *((case, [score]) for case, score in problems)],
                                     judge=judge.name, judge_version=judge.version)
        by_case = {case.key: scores[0] for case, scores in recorded if scores}
        return ComparisonResult(comparison, tuple(by_case[cand.key] for _, cand in comparison.pairs), policy=self.policy)

    def unavailable(self, cases: list[EvalCase]) -> list[str]:
        """Why metrics of these cases are missing because a judge's model or package is absent here."""
        return sorted(set(self._unavailable_metrics(cases).values()))

    def unavailable_reason(self, cases: list[EvalCase], metric: str) -> str | None:
        """Why `metric` is missing for these cases because its judge cannot run here, or None."""
        return self._unavailable_metrics(cases).get(metric)

    def _unavailable_metrics(self, cases: list[EvalCase]) -> dict[str, str]:
        return {
            metric: str(score.raw[UNAVAILABLE_KEY])
            for case in cases
            for metric, score in self.score(case).items()
            if score.value is None and score.error is None and UNAVAILABLE_KEY in score.raw
        }


def _create_judge(index: int, name: str, options: dict[str, Any]) -> Any:
    """A judge from `judges[index]`; its errors name the entry, as `judges[2] (name = "clip_score"): ...`."""
    try:
        return create_judge(name, options)
    except (ValueError, TypeError) as exc:
        key = f"judges[{index}].name" if isinstance(exc, UnknownJudgeError) else f"judges[{index}].options"
        raise ConfigError(f"{key} (name = {name!r}): {exc}") from None


def in_config_file(exc: ValueError, config: EvalConfig) -> ValueError:
    """The same kind of error with the config file in front (unless the message names it already)."""
    where = str(config.path) if config.path is not None else None
    message = str(exc)
    if where is None or message.startswith(where):
        return exc
    try:
        return type(exc)(f"{where}: {message}")
    except TypeError:  # an exception class with its own constructor
        return ConfigError(f"{where}: {message}")
