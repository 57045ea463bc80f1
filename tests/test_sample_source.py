"""kohya sample folders: file names parsed from the right, cases built, and every kind of bad folder
rejected with a message that names the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_harness.core.config import parse_config
from lora_harness.sources import collect_cases
from lora_harness.sources.samples import (
    EXPECTED_PATTERN,
    SampleFolderError,
    SampleName,
    collect_sample_cases,
    parse_sample_name,
)

PROMPTS = "<tok> portrait\n\n<tok> on a bench --d 7\n\n<tok> in space --w 512\n"


def make_folder(root: Path, files: list[str], prompts: str | None = PROMPTS, name: str = "sample") -> Path:
    """A sample folder with empty image files (collection reads names only) and a prompt file."""
    folder = root / name
    folder.mkdir(parents=True)
    for file in files:
        (folder / file).write_bytes(b"")
    if prompts is not None:
        (folder / "sample_prompts.txt").write_text(prompts, encoding="utf-8")
    return folder


# --- file names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        (
            "personal-lora-fluxdev-florence2_001800_01_20250106170134.png",
            SampleName("personal-lora-fluxdev-florence2", 1800, "step", "01", "20250106170134", None),
        ),
        (  # output names with '_' and digits: parsed from the right
            "my_lora_v2_000123_final_000200_02_20250106170134.png",
            SampleName("my_lora_v2_000123_final", 200, "step", "02", "20250106170134", None),
        ),
        (
            "my_lora_000100_000200_00_20250106170134.png",
            SampleName("my_lora_000100", 200, "step", "00", "20250106170134", None),
        ),
        (  # epoch sampling
            "flux-lora_e000004_00_20250106170134.png",
            SampleName("flux-lora", 4, "epoch", "00", "20250106170134", None),
        ),
        (  # trailing seed
            "flux-lora_000400_01_20250106170134_42.png",
            SampleName("flux-lora", 400, "step", "01", "20250106170134", 42),
        ),
        (
            "flux_lora_e000012_03_20250106170134_1234567.webp",
            SampleName("flux_lora", 12, "epoch", "03", "20250106170134", 1234567),
        ),
        (  # no output name
            "000200_00_20250106170134.png",
            SampleName(None, 200, "step", "00", "20250106170134", None),
        ),
        ("e000002_01_20250106170134_5.png", SampleName(None, 2, "epoch", "01", "20250106170134", 5)),
        ("lora_000200_00_20250106170134.jpg", SampleName("lora", 200, "step", "00", "20250106170134", None)),
        ("lora_000200_00_20250106170134.jpeg", SampleName("lora", 200, "step", "00", "20250106170134", None)),
        ("lora_000200_00_20250106170134.webp", SampleName("lora", 200, "step", "00", "20250106170134", None)),
        ("lora_000200_00_20250106170134.PNG", SampleName("lora", 200, "step", "00", "20250106170134", None)),
        ("lora_000200_00_20250106170134.JPEG", SampleName("lora", 200, "step", "00", "20250106170134", None)),
        ("lora_E000003_00_20250106170134.png", SampleName("lora", 3, "epoch", "00", "20250106170134", None)),
        (  # steps past 999999 keep all digits
            "lora_1000000_00_20250106170134.png",
            SampleName("lora", 1_000_000, "step", "00", "20250106170134", None),
        ),
    ],
)
def test_parse_sample_name(filename, expected):
    assert parse_sample_name(filename) == expected


@pytest.mark.parametrize(
    "filename",
    [
        "sample_prompts.txt",
        "lora_000200_00_20250106170134.txt",  # not an image suffix
        "lora_000200_00_20250106170134.gif",
        "lora_00200_00_20250106170134.png",  # five-digit step
        "lora_000200_0_20250106170134.png",  # one-digit prompt
        "lora_000200_00_2025010617013.png",  # 13-digit timestamp
        "lora_000200_00.png",  # no timestamp
        "lora_000200_00_20250106170134_.png",  # empty seed
        "lora_000200_00_20250106170134_s42.png",
        "lora_x000200_00_20250106170134.png",
        "lora_000200_00_20250106170134.png.bak",
        "portrait.png",
    ],
)
def test_non_matching_names(filename):
    assert parse_sample_name(filename) is None


# --- collecting a folder ---------------------------------------------------------------------------------


def test_collect_builds_cases_with_prompts_and_seeds(tmp_path):
    folder = make_folder(
        tmp_path,
        [
            "lora-a_000400_00_20250106170300.png",
            "lora-a_000200_00_20250106170100.png",
            "lora-a_000200_01_20250106170104.png",
            "lora-a_000200_02_20250106170108_99.png",
        ],
    )
    cases = collect_sample_cases(folder, variant="variant-x")
    assert [c.key for c in cases] == [
        "lora-a-step000200-p00",
        "lora-a-step000200-p01-s7",  # seed from the prompt's --d when the name has none
        "lora-a-step000200-p02-s99",  # the file name's seed wins
        "lora-a-step000400-p00",
    ]
    first = cases[0]
    assert first.prompt.text == "<tok> portrait"
    assert first.image_path == folder / "lora-a_000200_00_20250106170100.png"
    assert first.timestamp == "20250106170100"
    assert first.variant == "variant-x"
    assert first.step_label == "000200"
    assert cases[2].prompt.width == 512
    assert cases[1].test_id == "lora-a-step000200-p01-s7"


def test_no_output_name_uses_the_folder_name_and_loraname_overrides(tmp_path):
    folder = make_folder(tmp_path, ["000200_00_20250106170100.png", "e000003_01_20250106170200.png"], name="my-run")
    assert {c.loraname for c in collect_sample_cases(folder)} == {"my-run"}
    cases = collect_sample_cases(folder, loraname="renamed")
    assert [(c.loraname, c.step_kind, c.training_step) for c in cases] == [
        ("renamed", "epoch", 3),
        ("renamed", "step", 200),
    ]
    assert cases[0].key == "renamed-epoch000003-p01-s7"


def test_prompt_file_in_parent_folder_is_found(tmp_path):
    """kohya: <output>/sample/*.png with the prompt file in <output>/ (fluxgym's layout)."""
    folder = make_folder(tmp_path / "output", ["lora_000200_00_20250106170100.png"], prompts=None)
    (tmp_path / "output" / "sample_prompts.txt").write_text("only prompt\n", encoding="utf-8")
    [case] = collect_sample_cases(folder)
    assert case.prompt.text == "only prompt"


def test_explicit_prompt_file(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_00_20250106170100.png"], prompts=None)
    prompts = tmp_path / "elsewhere.txt"
    prompts.write_text("from elsewhere\n", encoding="utf-8")
    [case] = collect_sample_cases(folder, prompts_file=prompts)
    assert case.prompt.text == "from elsewhere"


def test_missing_folder(tmp_path):
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    assert "not found" in str(info.value)
    assert "`path`" in str(info.value)


def test_a_file_instead_of_a_folder(tmp_path):
    file = tmp_path / "lora_000200_00_20250106170100.png"
    file.write_bytes(b"")
    with pytest.raises(SampleFolderError, match="not a folder"):
        collect_sample_cases(file)


@pytest.mark.parametrize("prompts", [PROMPTS, None], ids=["with-prompts", "bare"])
def test_empty_folder_says_where_kohya_writes_samples(tmp_path, prompts):
    folder = make_folder(tmp_path, [], prompts=prompts)
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(folder)
    message = str(info.value)
    assert "no sample images" in message
    assert str(folder) in message
    assert "--sample_every_n_steps" in message


def test_missing_prompt_file_says_how_to_set_it(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_00_20250106170100.png"], prompts=None)
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(folder)
    assert str(folder) in str(info.value)
    assert "prompts = " in str(info.value)


def test_unmatched_files_are_listed_with_the_pattern_and_the_fix(tmp_path):
    folder = make_folder(
        tmp_path,
        ["lora_000200_00_20250106170100.png", "cover.png", "lora_000200_00_final.jpg", "notes.txt"],
    )
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(folder)
    message = str(info.value)
    assert "2 file(s)" in message
    assert str(folder) in message
    assert "cover.png" in message and "lora_000200_00_final.jpg" in message
    assert "notes.txt" not in message  # not an image: never a candidate
    assert EXPECTED_PATTERN in message
    assert "ignore_unmatched = true" in message


def test_unmatched_list_is_truncated_after_twenty(tmp_path):
    folder = make_folder(tmp_path, [f"img{i:03d}.png" for i in range(25)])
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(folder)
    assert "25 file(s)" in str(info.value)
    assert "img019.png" in str(info.value)
    assert "img020.png" not in str(info.value)
    assert "..." in str(info.value)


def test_ignore_unmatched_skips_them(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_00_20250106170100.png", "cover.png"])
    [case] = collect_sample_cases(folder, ignore_unmatched=True)
    assert case.image_path.name == "lora_000200_00_20250106170100.png"


def test_only_unmatched_files_even_when_ignored_is_an_error(tmp_path):
    folder = make_folder(tmp_path, ["cover.png"])
    with pytest.raises(SampleFolderError, match="no kohya sample images left") as info:
        collect_sample_cases(folder, ignore_unmatched=True)
    assert str(folder) in str(info.value)


def test_prompt_id_missing_from_prompt_file(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_05_20250106170100.png"])
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(folder)
    message = str(info.value)
    assert "lora_000200_05_20250106170100.png" in message
    assert "prompt id 05" in message
    assert str(folder / "sample_prompts.txt") in message
    assert "3 prompt(s)" in message and "00, 01, 02" in message
    assert "use the prompt file the samples were made with" in message


def test_three_digit_prompt_id_matches_by_number(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_001_20250106170100.png"])
    [case] = collect_sample_cases(folder)
    assert case.prompt.text == "<tok> on a bench"


def test_duplicate_case_keys_are_an_error_naming_both_files(tmp_path):
    older, newer = "lora_000200_00_20250106170100.png", "lora_000200_00_20250107090000.png"
    folder = make_folder(tmp_path, [older, newer, "lora_000200_01_20250106170104.png"])
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(folder)
    message = str(info.value)
    assert "1 case(s) have more than one image" in message
    assert f"{older} and {newer}" in message
    assert str(folder) in message
    assert 'on_duplicate = "latest"' in message


def test_png_and_jpg_of_the_same_case_are_duplicates(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_00_20250106170100.png", "lora_000200_00_20250106170100.jpg"])
    with pytest.raises(SampleFolderError, match="more than one image"):
        collect_sample_cases(folder)


def test_different_seeds_are_not_duplicates(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_00_20250106170100_1.png", "lora_000200_00_20250106170100_2.png"])
    assert [c.key for c in collect_sample_cases(folder)] == ["lora-step000200-p00-s1", "lora-step000200-p00-s2"]


def test_on_duplicate_latest_keeps_the_newest_timestamp(tmp_path):
    folder = make_folder(
        tmp_path,
        ["lora_000200_00_20250106170100.png", "lora_000200_00_20250107090000.png", "lora_000200_00_20250106230000.png"],
    )
    [case] = collect_sample_cases(folder, on_duplicate="latest")
    assert case.timestamp == "20250107090000"
    assert case.image_path.name == "lora_000200_00_20250107090000.png"


def test_on_duplicate_latest_keeps_newest_even_when_it_sorts_first(tmp_path):
    # Two output names mapped onto one loraname: the newer file sorts first by name.
    folder = make_folder(tmp_path, ["a_000200_00_20250108000000.png", "b_000200_00_20250101000000.png"])
    [case] = collect_sample_cases(folder, loraname="same", on_duplicate="latest")
    assert case.image_path.name == "a_000200_00_20250108000000.png"


# --- several sources -------------------------------------------------------------------------------------


def _config(sources: list[dict], base: Path):
    return parse_config({"sources": sources, "judges": [{"name": "image_stats"}]}, base_dir=base)


def test_collect_cases_over_several_sources(tmp_path):
    make_folder(tmp_path, ["r4_000200_00_20250106170100.png", "r4_000400_00_20250106170200.png"], name="r4")
    make_folder(tmp_path, ["r32_000200_00_20250106180100.png"], name="r32")
    cases = collect_cases(_config([{"path": "r4"}, {"path": "r32", "name": "rank 32"}], tmp_path))
    assert [(c.key, c.variant) for c in cases] == [
        ("r4-step000200-p00", "r4"),
        ("r4-step000400-p00", "r4"),
        ("r32-step000200-p00", "rank 32"),
    ]


def test_two_sources_with_the_same_case_key(tmp_path):
    a = make_folder(tmp_path, ["lora_000200_00_20250106170100.png"], name="run1")
    b = make_folder(tmp_path, ["lora_000200_00_20250107170100.png"], name="run2")
    with pytest.raises(SampleFolderError) as info:
        collect_cases(_config([{"path": "run1"}, {"path": "run2"}], tmp_path))
    message = str(info.value)
    assert "lora-step000200-p00" in message
    assert str(a / "lora_000200_00_20250106170100.png") in message
    assert str(b / "lora_000200_00_20250107170100.png") in message
    assert "loraname = " in message
    # The fix the message suggests works.
    cases = collect_cases(_config([{"path": "run1"}, {"path": "run2", "loraname": "lora-run2"}], tmp_path))
    assert sorted(c.key for c in cases) == ["lora-run2-step000200-p00", "lora-step000200-p00"]


def test_source_options_from_config_reach_the_folder(tmp_path):
    make_folder(tmp_path, ["lora_000200_00_20250106170100.png", "cover.png"], name="s")
    (tmp_path / "prompts.txt").write_text("configured prompt\n", encoding="utf-8")
    [case] = collect_cases(_config([{"path": "s", "prompts": "prompts.txt", "ignore_unmatched": True}], tmp_path))
    assert case.prompt.text == "configured prompt"


# --- dot-files and symlinks ----------------------------------------------------------------------------------


def test_macos_appledouble_and_other_dot_files_are_ignored(tmp_path):
    """macOS writes `._<name>` twins on foreign volumes; they parse as a LoRA named `._lora` otherwise."""
    folder = make_folder(
        tmp_path,
        ["lora_000200_00_20250106170100.png", "._lora_000200_00_20250106170100.png", ".DS_Store", ".hidden.png"],
    )
    cases = collect_sample_cases(folder)
    assert [(c.loraname, c.image_path.name) for c in cases] == [("lora", "lora_000200_00_20250106170100.png")]


def test_symlinked_sample_is_collected(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_00_20250106170100.png"])
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    (elsewhere / "img.png").write_bytes(b"")
    (folder / "lora_000400_00_20250106170500.png").symlink_to(elsewhere / "img.png")
    assert [c.training_step for c in collect_sample_cases(folder)] == [200, 400]


def test_broken_symlink_is_an_error_naming_it(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_00_20250106170100.png"])
    link = folder / "lora_000400_00_20250106170500.png"
    link.symlink_to(tmp_path / "gone.png")
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(folder)
    message = str(info.value)
    assert str(link) in message and "broken symlink" in message and "gone.png" in message


def test_symlink_loop_is_an_error_naming_it(tmp_path):
    folder = make_folder(tmp_path, ["lora_000200_00_20250106170100.png"])
    a, b = folder / "lora_000400_00_20250106170500.png", folder / "loop.png"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(SampleFolderError) as info:
        collect_sample_cases(folder)
    assert "symlink loop" in str(info.value)
    assert str(a) in str(info.value) or str(b) in str(info.value)
