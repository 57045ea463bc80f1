"""Judge agreement with human labels: hand-computed correlations and accuracy, joins, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from lora_harness.analyses.agreement import AgreementError, agreement
from lora_harness.verdicts.baseline import Observation
from lora_harness.cli.main import main

STUDY = Path("/work/shared/reference/seed_results")


def obs(metric: str, values: list[float], *, seeds: bool = False, lora: str = "l") -> list[Observation]:
    return [
        Observation(lora, 200 * (i + 1), "step", "00", 7 if seeds else None, metric, v) for i, v in enumerate(values)
    ]


def test_spearman_and_kendall_by_hand() -> None:
    # judge ranks 1 3 2 4 vs human 1 2 3 4: d^2 sum 2 -> rho = 1 - 6*2/(4*15) = 0.8;
    # 5 concordant, 1 discordant pair -> tau = 4/6
    report = agreement(obs("m", [1, 2, 3, 4]), obs("m", [0.1, 0.4, 0.35, 0.8]))
    (m,) = report.metrics
    assert m.n == 4 and not m.binary and m.accuracy is None
    assert m.spearman == pytest.approx(0.8)
    assert m.kendall == pytest.approx(4 / 6)


def test_binary_labels_get_accuracy_at_the_threshold() -> None:
    human = obs("present", [1, 1, 0, 0, 1])
    judge = obs("present", [0.9, 0.4, 0.2, 0.6, 1.0])  # verdicts 1 0 0 1 1: 3 of 5 right
    (m,) = agreement(human, judge).metrics
    assert m.binary and m.accuracy == pytest.approx(0.6)
    (strict,) = agreement(human, judge, binary_threshold=0.3).metrics  # verdicts 1 1 0 1 1: 4 of 5
    assert strict.accuracy == pytest.approx(0.8)


def test_repeats_are_averaged_and_seeds_join_only_when_both_sides_have_them() -> None:
    human = obs("m", [1, 2, 3])
    # step 200 judged twice (0.1, 0.5): averaged to 0.3, judge ranks 2 1 3 -> rho = 1 - 6*2/(3*8) = 0.5
    # (the first value alone would give 1.0, the last alone -0.5)
    judge = obs("m", [0.1, 0.2, 0.4]) + [Observation("l", 200, "step", "00", None, "m", 0.5)]
    report = agreement(human, judge)
    assert not report.keyed_on_seed
    (m,) = report.metrics
    assert m.spearman == pytest.approx(0.5)
    seeded = agreement(obs("m", [1, 2, 3], seeds=True), obs("m", [0.1, 0.2, 0.3], seeds=True))
    assert seeded.keyed_on_seed and seeded.metrics[0].spearman == pytest.approx(1.0)


def test_degenerate_cases_are_explained_not_computed() -> None:
    (few,) = agreement(obs("m", [1, 2]), obs("m", [0.1, 0.2])).metrics
    assert few.spearman is None and few.note == "fewer than 3 images"
    (flat,) = agreement(obs("m", [1, 2, 3]), obs("m", [0.5, 0.5, 0.5])).metrics
    assert flat.spearman is None and flat.note == "judge scores constant: no ranking"


def test_unmatched_labels_are_counted_and_metrics_must_exist() -> None:
    human = obs("m", [1, 2, 3, 4]) + [Observation("other", 200, "step", "00", None, "m", 1.0)]
    report = agreement(human, obs("m", [0.1, 0.2, 0.3, 0.4]))
    assert report.unmatched_labels == 1 and report.metrics[0].n == 4
    with pytest.raises(AgreementError, match="no metric is in both files: labels have m; scores have x"):
        agreement(obs("m", [1]), obs("x", [1]))
    with pytest.raises(AgreementError, match="metric 'y' has no values in the labels"):
        agreement(obs("m", [1]), obs("m", [1]), metrics=["y"])


@pytest.mark.skipif(not STUDY.is_dir(), reason="the study's reference CSVs are not available")
def test_cli_against_the_studys_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = STUDY / "res_florence.csv"
    study = pd.read_csv(scores, dtype={"training_step": str, "prompt_id": str})
    chosen = study[study.training_step.isin(["000200", "000600", "001400", "002400"])].copy()
    # a person labelled these images: same-person ranks agree with the judge exactly, except one swap;
    # "person present" labels are the judge's verdicts except one image the person says shows nobody
    labels = chosen[["loraname", "training_step", "prompt_id"]].copy()
    labels["training_step"] = labels["training_step"].str.lstrip("0")  # people write 200, not 000200
    labels["prompt_id"] = labels["prompt_id"].str.lstrip("0").replace("", "0")
    labels["eval_same_person_llm"] = chosen["eval_same_person_llm"].rank(method="first").to_numpy()
    first, second = labels["eval_same_person_llm"].idxmin(), labels["eval_same_person_llm"].idxmax()
    labels.loc[[first, second], "eval_same_person_llm"] = labels.loc[[second, first], "eval_same_person_llm"].to_numpy()
    labels["eval_person_llm"] = (chosen["eval_person_llm"] >= 0.5).astype(int).to_numpy()
    labels.loc[labels.index[0], "eval_person_llm"] = 1 - labels.loc[labels.index[0], "eval_person_llm"]
    labels["notes"] = "looked at it"  # text columns are not metrics
    path = tmp_path / "labels.csv"
    labels.to_csv(path, index=False)

    out = tmp_path / "agreement.json"
    assert main(["agreement", "--human", str(path), "--scores", str(scores), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "eval_same_person_llm" in printed and "binary, judge >= 0.5" in printed
    result = {m["metric"]: m for m in json.loads(out.read_text())["metrics"]}
    assert set(result) == {"eval_person_llm", "eval_same_person_llm"}
    n = len(chosen)
    assert result["eval_person_llm"]["n"] == n and result["eval_person_llm"]["binary"]
    assert result["eval_person_llm"]["accuracy"] == pytest.approx((n - 1) / n)
    # independently: scipy on the two columns as built above (one row per image in both)
    expected = stats.spearmanr(labels["eval_same_person_llm"], chosen["eval_same_person_llm"].to_numpy())
    assert result["eval_same_person_llm"]["spearman"] == pytest.approx(expected.statistic)
    assert result["eval_same_person_llm"]["kendall"] == pytest.approx(
        stats.kendalltau(labels["eval_same_person_llm"], chosen["eval_same_person_llm"].to_numpy()).statistic
    )
    assert result["eval_same_person_llm"]["spearman"] < 1.0  # the swap costs agreement


def test_cli_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agreement", "--human", str(tmp_path / "none.csv"), "--scores", str(tmp_path)]) == 2
    assert "labels CSV not found" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    labels.write_text("loraname,training_step,prompt_id,m\nl,200,0,1\n")
    assert main(["agreement", "--human", str(labels), "--scores", str(tmp_path / "missing.csv")]) == 2
    assert "scores: baseline run not found" in capsys.readouterr().err
