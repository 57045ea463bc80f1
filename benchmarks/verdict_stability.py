"""How often a gate's verdict holds, flips or is wrong, measured on simulated judges (issue "Verdicts").

Each cell re-runs the same checkpoint K times with a simulated judge and decides it with the product's own
functions (`verdicts.thresholds.checkpoint_findings`, `verdicts.baseline.compare_paired`), side by side with the
old rule (the point mean against the minimum). The truth is known, so the promises can be checked:

- a checkpoint truly at or below its minimum passes in < 2.5% of runs (any n, any judge kind);
- the decisive flip rate (one run passes, another fails; inconclusive counts as neither) is < 1%;
- interval coverage >= 93% for continuous metrics at n >= 6 and >= 90% for 0/1 metrics at n >= 12;
- paired non-inferiority passes a candidate exactly at the margin in <= 2.5% of runs;
- adaptive judging decides >= 90% of near-threshold runs within its budget, spending fewer judge calls than
  a fixed design with the same flip rate.

Judges: continuous scores with per-call noise sd 0.1 and 0.2 around the checkpoint's mean, clipped to [0, 1]
and rounded to the LLM grid of 0.05; 0/1 answers drawn Bernoulli. The "true mean" of a cell is the mean of
that clipped, rounded distribution (solved for, not assumed).

    .venv/bin/python benchmarks/verdict_stability.py            # K = 2000 runs per cell (about 2 minutes)
    .venv/bin/python benchmarks/verdict_stability.py --runs 300 # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_harness.core.config import StatsConfig, Threshold  # noqa: E402
from lora_harness.verdicts.baseline import compare_paired  # noqa: E402
from lora_harness.verdicts.thresholds import checkpoint_findings  # noqa: E402
from lora_harness.verdicts.sequential import look_confidence, planned_rounds  # noqa: E402
from lora_harness.verdicts.stats import mean_ci  # noqa: E402

THRESHOLD = 0.6
GRID = 0.05
DELTAS = (-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2)
SIZES = (3, 6, 9, 24)
KINDS = ("sd0.1", "sd0.2", "binary")


@dataclass(frozen=True)
class Judge:
    kind: str

    @property
    def sd(self) -> float:
        return {"sd0.1": 0.1, "sd0.2": 0.2}.get(self.kind, 0.0)

    def location(self, mean: float) -> float:
        """The noise-free score whose clipped, rounded judge answers average `mean`."""
        if self.kind == "binary":
            return mean
        z = np.random.default_rng(12345).normal(0, 1, 400_000)
        f = lambda mu: float(self.answers_of(mu + self.sd * z).mean()) - mean  # noqa: E731
        return optimize.brentq(f, mean - 0.5, mean + 0.5, xtol=1e-6)

    def answers_of(self, raw: np.ndarray) -> np.ndarray:
        return np.round(np.clip(raw, 0, 1) / GRID) * GRID

    def draw(self, rng: np.random.Generator, location: float, shape: tuple[int, ...]) -> np.ndarray:
        if self.kind == "binary":
            return (rng.random(shape) < location).astype(float)
        return self.answers_of(location + self.sd * rng.normal(0, 1, shape))


def decide(values: np.ndarray, stats: StatsConfig) -> str:
    found = checkpoint_findings({"m": values.tolist()}, {"m": Threshold(checkpoint=THRESHOLD)}, stats)
    return found[0].decision if found else "pass"


def threshold_cells(runs: int, seed: int) -> list[dict]:
    stats = StatsConfig()
    rows = []
    for kind in KINDS:
        judge = Judge(kind)
        for delta in DELTAS:
            truth = THRESHOLD + delta
            location = judge.location(truth)
            for n in SIZES:
                rng = np.random.default_rng([seed, KINDS.index(kind), DELTAS.index(delta), n])
                data = judge.draw(rng, location, (runs, n))
                decisions = [decide(row, stats) for row in data]
                cis = [mean_ci(row.tolist(), confidence=stats.confidence, sd_floor=stats.sd_floor) for row in data]
                p_pass = decisions.count("pass") / runs
                p_fail = decisions.count("fail") / runs
                old_pass = float(np.mean(data.mean(axis=1) >= THRESHOLD))
                rows.append({
                    "kind": kind, "delta": delta, "n": n, "pass": p_pass, "fail": p_fail,
                    "inconclusive": 1 - p_pass - p_fail,
                    "flip": 2 * p_pass * p_fail,  # P(two independent runs: one passes, the other fails)
                    "seen": 2 * p_pass * (1 - p_pass),  # test outcomes differ under inconclusive = "fail"
                    "coverage": float(np.mean([c.low <= truth <= c.high for c in cis])),
                    "old_pass": old_pass, "old_flip": 2 * old_pass * (1 - old_pass),
                })
    return rows


def paired_cells(runs: int, seed: int, margin: float = 0.05) -> list[dict]:
    """A candidate exactly `margin` worse than its baseline: how often does non-inferiority pass?"""
    rows = []
    for kind in KINDS:
        judge = Judge(kind)
        base_truth = 0.7
        base_loc, cand_loc = judge.location(base_truth), judge.location(base_truth - margin)
        for n in SIZES:
            rng = np.random.default_rng([seed, 99, KINDS.index(kind), n])
            passes = 0
            for _ in range(runs):
                if kind == "binary":  # correlated pairs: the same image is easy or hard for both
                    latent = rng.random(n)
                    base = (latent < base_loc).astype(float)
                    cand = (latent < cand_loc).astype(float)
                    flip = rng.random(n) < 0.2  # and some independent disagreement
                    cand = np.where(flip, (rng.random(n) < cand_loc).astype(float), cand)
                else:
                    base = judge.draw(rng, base_loc, (n,))
                    cand = judge.draw(rng, cand_loc, (n,))
                keys = range(n)
                result = compare_paired({k: [cand[k]] for k in keys}, {k: [base[k]] for k in keys}, metric="m", margin=margin)
                passes += result.decision == "pass"
            rows.append({"kind": kind, "n": n, "wrongful_pass": passes / runs})
    return rows


def adaptive_cells(runs: int, seed: int, start: int, budget: int, *, strategy: str = "images", images: int = 9) -> list[dict]:
    """Near-threshold checkpoints (|true - minimum| = 0.05, sd 0.1): more evidence per round until decided.

    `images`: more images (generation mode's extra seeds), `start` doubling to `budget`. `repeats`: the
    product's LLM path, `images` images each answered 1, 2, 4, ... up to `budget` times (their mean is the
    image's score, so n stays the number of images). Each look decides at the Bonferroni-spent confidence
    (`verdicts.sequential`); each fixed design of a planned size decides once at the plain confidence.
    """
    judge = Judge("sd0.1")
    sizes = planned_rounds(start, budget)
    per_look = StatsConfig(confidence=look_confidence(StatsConfig().confidence, len(sizes)))
    calls_of = (lambda size: size) if strategy == "images" else (lambda size: size * images)  # noqa: E731

    def evidence(rng: np.random.Generator, location: float) -> np.ndarray:
        shape = (budget,) if strategy == "images" else (images, budget)
        return judge.draw(rng, location, shape)

    def at(data: np.ndarray, size: int) -> np.ndarray:
        return data[:size] if strategy == "images" else data[:, :size].mean(axis=1)

    rows = []
    for delta in (-0.05, 0.0, 0.05):
        location = judge.location(THRESHOLD + delta)
        rng = np.random.default_rng([seed, 7, DELTAS.index(delta), len(strategy)])
        outcomes, calls = [], []
        for _ in range(runs):
            data = evidence(rng, location)
            for size in sizes:
                decision = decide(at(data, size), per_look)
                if decision != "inconclusive":
                    break
            outcomes.append(decision)
            calls.append(calls_of(size))
        p_pass, p_fail = outcomes.count("pass") / runs, outcomes.count("fail") / runs
        fixed = {}
        for size in sizes:
            decided = [decide(at(evidence(rng, location), size), StatsConfig()) for _ in range(runs)]
            f_pass, f_fail = decided.count("pass") / runs, decided.count("fail") / runs
            fixed[size] = {"decisive": f_pass + f_fail, "flip": 2 * f_pass * f_fail, "calls": calls_of(size)}
        rows.append({
            "delta": delta, "decisive": p_pass + p_fail, "pass": p_pass, "fail": p_fail, "flip": 2 * p_pass * p_fail,
            "calls": float(np.mean(calls)), "fixed": fixed,
        })
    return rows


def report_adaptive(rows: list[dict], sizes: list[int], label: str, check: Any) -> None:
    for c in rows:
        fixed = "; ".join(f"{size}: decisive {f['decisive']:.3f} flip {f['flip']:.4f}" for size, f in c["fixed"].items())
        print(f"true-min {c['delta']:+.2f}: adaptive decisive {c['decisive']:.3f} (pass {c['pass']:.3f}, fail {c['fail']:.3f}), "
              f"flip {c['flip']:.4f}, mean judge calls {c['calls']:.1f}\n    fixed designs ({label}: ...) {fixed}")
    near = [c for c in rows if abs(c["delta"]) == 0.05]
    check(f"adaptive ({label}) decides >= 90% of near-threshold runs", min(c["decisive"] for c in near) >= 0.9,
          f"min {min(c['decisive'] for c in near):.3f}")
    # the smallest fixed design that is as decisive as adaptive mode, with a flip rate no lower
    matching = [size for size in sizes if all(c["fixed"][size]["decisive"] >= c["decisive"] - 0.01 for c in near)]
    size = matching[0] if matching else sizes[-1]
    fixed_calls = near[0]["fixed"][size]["calls"]
    check(f"adaptive ({label}) spends fewer calls than a fixed design as decisive, flip rate no higher",
          all(c["calls"] < fixed_calls and c["flip"] <= max(c["fixed"][size]["flip"], 0.01) for c in near),
          ", ".join(f"{c['calls']:.1f} vs {fixed_calls} calls ({c['calls'] / fixed_calls:.2f}x)" for c in near))
    at = next(c for c in rows if c["delta"] == 0.0)
    check(f"adaptive ({label}): at the minimum passes < 2.5% (looking again is paid for)", at["pass"] < 0.025, f"{at['pass']:.4f}")


def threshold_section(args: argparse.Namespace, check: Any) -> None:
    cells = threshold_cells(args.runs, args.seed)
    print(f"{'judge':7} {'true-min':>8} {'n':>3} {'pass':>6} {'fail':>6} {'incon':>6} {'flip':>7} {'seen':>6} {'cover':>6} | {'old pass':>8} {'old flip':>8}")
    for c in cells:
        print(f"{c['kind']:7} {c['delta']:+8.2f} {c['n']:3d} {c['pass']:6.3f} {c['fail']:6.3f} {c['inconclusive']:6.3f} "
              f"{c['flip']:7.4f} {c['seen']:6.3f} {c['coverage']:6.3f} | {c['old_pass']:8.3f} {c['old_flip']:8.3f}")
    worst_flip = max(cells, key=lambda c: c["flip"])
    check("decisive flip rate < 1% in every cell", worst_flip["flip"] < 0.01,
          f"worst {worst_flip['flip']:.4f} ({worst_flip['kind']}, {worst_flip['delta']:+.2f}, n={worst_flip['n']}); "
          f"old rule worst {max(c['old_flip'] for c in cells):.3f}")
    at_or_below = [c for c in cells if c["delta"] <= 0]
    worst_pass = max(at_or_below, key=lambda c: c["pass"])
    check("at or below the minimum passes < 2.5%", worst_pass["pass"] < 0.025,
          f"worst {worst_pass['pass']:.4f} ({worst_pass['kind']}, {worst_pass['delta']:+.2f}, n={worst_pass['n']}); "
          f"old rule at the minimum {max(c['old_pass'] for c in cells if c['delta'] == 0):.3f}")
    strong = next(c for c in cells if c["kind"] == "sd0.1" and c["delta"] == 0.2 and c["n"] == 9)
    check("0.2 above passes > 90% at n = 9 (sd 0.1)", strong["pass"] > 0.9, f"{strong['pass']:.3f}")
    cont = [c for c in cells if c["kind"] != "binary" and c["n"] >= 6]
    check("coverage >= 93% (continuous, n >= 6)", min(c["coverage"] for c in cont) >= 0.93, f"min {min(c['coverage'] for c in cont):.3f}")
    binary = [c for c in cells if c["kind"] == "binary" and c["n"] >= 12]
    check("coverage >= 90% (0/1, n >= 12)", min(c["coverage"] for c in binary) >= 0.90, f"min {min(c['coverage'] for c in binary):.3f}")



def paired_section(args: argparse.Namespace, check: Any) -> None:
    print("\npaired non-inferiority, candidate truly 0.05 worse than its baseline (margin 0.05)")
    paired = paired_cells(args.runs, args.seed)
    for c in paired:
        print(f"{c['kind']:7} n={c['n']:3d} wrongful pass {c['wrongful_pass']:.4f}")
    worst = max(paired, key=lambda c: c["wrongful_pass"])
    check("wrongful pass at the margin <= 2.5%", worst["wrongful_pass"] <= 0.025,
          f"worst {worst['wrongful_pass']:.4f} ({worst['kind']}, n={worst['n']})")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="K: simulated runs per cell")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--adaptive-start", type=int, default=9, help="images before the first look")
    parser.add_argument("--adaptive-budget", type=int, default=144, help="images at the last look")
    parser.add_argument("--max-repeats", type=int, default=16, help="judge repeats per image at the last look")
    parser.add_argument("--repeat-images", type=int, default=9, help="images of the repeats strategy")
    parser.add_argument("--sections", default="threshold,paired,adaptive", help="comma-separated: threshold, paired, adaptive")
    args = parser.parse_args(argv)
    args.sections = set(args.sections.split(","))
    started = time.perf_counter()
    ok = True

    def check(label: str, good: bool, detail: str) -> None:
        nonlocal ok
        ok &= good
        print(f"  [{'ok' if good else 'MISSED'}] {label}: {detail}")

    print(f"verdict stability: minimum {THRESHOLD}, K = {args.runs} runs per cell, confidence {StatsConfig().confidence}")
    if "threshold" in args.sections:
        threshold_section(args, check)
    if "paired" in args.sections:
        paired_section(args, check)
    if "adaptive" in args.sections:
        sizes = planned_rounds(args.adaptive_start, args.adaptive_budget)
        print(f"\nadaptive judging, more images (sd 0.1): images per look {sizes}, each look at confidence "
              f"{look_confidence(StatsConfig().confidence, len(sizes)):.4f}")
        report_adaptive(adaptive_cells(args.runs, args.seed, args.adaptive_start, args.adaptive_budget), sizes, "images", check)
        sizes = planned_rounds(1, args.max_repeats)
        print(f"\nadaptive judging, more judge repeats (sd 0.1 per answer, {args.repeat_images} images): repeats per "
              f"look {sizes}, each look at confidence {look_confidence(StatsConfig().confidence, len(sizes)):.4f}")
        rows = adaptive_cells(args.runs, args.seed, 1, args.max_repeats, strategy="repeats", images=args.repeat_images)
        report_adaptive(rows, sizes, "repeats", check)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
