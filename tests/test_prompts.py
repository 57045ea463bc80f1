"""kohya prompt files: ids by kohya's rule, inline options parsed out of the text, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_harness.core.cases import Prompt
from lora_harness.core.prompts import PromptFileError, PromptFileWarning, parse_prompt_line, read_prompt_file

REFERENCE_TRAINING = Path("/work/shared/reference/seed_training")


def write(tmp_path: Path, text: str | bytes, name: str = "sample_prompts.txt") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_ids_follow_order_among_non_empty_lines_without_a_first_column_hash(tmp_path):
    # sd-scripts load_prompts: `line.strip()` of lines with `len(line.strip()) > 0 and line[0] != "#"`.
    path = write(
        tmp_path,
        "# sample prompts for my run\n"
        "\n"
        "a photo of <tok>\n"
        "   \n"
        "<tok> on a beach\n"
        "\n\n"
        "<tok> in space\n",
    )
    prompts = read_prompt_file(path)
    assert [(p.prompt_id, p.text) for p in prompts] == [
        ("00", "a photo of <tok>"),
        ("01", "<tok> on a beach"),
        ("02", "<tok> in space"),
    ]


def test_ids_are_zero_padded_to_two_digits_and_grow_past_99(tmp_path):
    path = write(tmp_path, "".join(f"prompt {i}\n" for i in range(101)))
    ids = [p.prompt_id for p in read_prompt_file(path)]
    assert ids[:3] == ["00", "01", "02"]
    assert ids[9:11] == ["09", "10"]
    assert ids[-1] == "100"


def test_inline_options_are_parsed_out_of_the_text():
    prompt = parse_prompt_line(
        '<phigep> on a bench --w 512 --h 768 --d 42 --s 20 --l 3.5 --g 2.5 --n bad hands, blurry', "03"
    )
    assert prompt == Prompt(
        prompt_id="03",
        text="<phigep> on a bench",
        negative="bad hands, blurry",
        width=512,
        height=768,
        seed=42,
        steps=20,
        cfg_scale=3.5,
        guidance=2.5,
    )
    assert "--" not in prompt.text


def test_prompt_without_options_keeps_trigger_and_has_no_settings():
    prompt = parse_prompt_line("  <phigep> playing chess in space  ", "02")
    assert prompt == Prompt(prompt_id="02", text="<phigep> playing chess in space")


def test_unknown_option_warns_naming_file_prompt_and_known_options():
    with pytest.warns(PromptFileWarning) as record:
        prompt = parse_prompt_line("a cat --zoom 2", "04", source="/x/sample_prompts.txt")
    assert prompt == Prompt(prompt_id="04", text="a cat")
    message = str(record[0].message)
    assert "/x/sample_prompts.txt" in message
    assert "prompt 04" in message
    assert "--zoom" in message
    for option in ("--w", "--h", "--d", "--s", "--l", "--g", "--n"):
        assert option in message


def test_unreadable_option_value_in_a_file_warns_with_file_and_line(tmp_path):
    path = write(tmp_path, "first\nsecond --w x512\n")
    with pytest.warns(PromptFileWarning) as record:
        prompts = read_prompt_file(path)
    assert prompts[1] == Prompt(prompt_id="01", text="second")  # kohya renders it at its default width
    assert f"{path}:2" in str(record[0].message)
    assert "prompt 01" in str(record[0].message)


@pytest.mark.parametrize("text", ["", "\n\n   \n", "# only a comment\n\n# another\n"])
def test_file_without_prompts_is_an_error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(PromptFileError, match="no prompts") as info:
        read_prompt_file(path)
    assert str(path) in str(info.value)


def test_non_utf8_file_is_an_error_that_says_to_save_as_utf8(tmp_path):
    path = write(tmp_path, "caf\xe9 at night\n".encode("latin-1"))
    with pytest.raises(PromptFileError) as info:
        read_prompt_file(path)
    assert str(path) in str(info.value)
    assert "UTF-8" in str(info.value)


def test_missing_prompt_file_says_how_to_point_at_it(tmp_path):
    with pytest.raises(PromptFileError) as info:
        read_prompt_file(tmp_path / "nope.txt")
    assert str(tmp_path / "nope.txt") in str(info.value)
    assert "prompts = " in str(info.value)


def test_utf8_text_and_crlf_line_endings(tmp_path):
    path = write(tmp_path, "café <tok>\r\n\r\nnaïve <tok> --d 3\r\n".encode())
    prompts = read_prompt_file(path)
    assert [(p.prompt_id, p.text, p.seed) for p in prompts] == [("00", "café <tok>", None), ("01", "naïve <tok>", 3)]


REFERENCE_PROMPT_FILES = sorted(REFERENCE_TRAINING.glob("*/sample_prompts.txt"))


@pytest.mark.skipif(not REFERENCE_PROMPT_FILES, reason="research reference files not available")
@pytest.mark.parametrize("path", REFERENCE_PROMPT_FILES, ids=lambda p: p.parent.name)
def test_research_prompt_files_parse(path):
    prompts = read_prompt_file(path)
    # The gpt4ocaptions run sampled only the bare trigger; the others used three prompts.
    expected = 1 if path.parent.name == "gpt4ocaptions" else 3
    assert len(prompts) == expected
    assert [p.prompt_id for p in prompts] == [f"{i:02d}" for i in range(expected)]
    assert prompts[0].text == "<phigep>"
    assert all(p.text.startswith("<phigep>") for p in prompts)
    if expected == 3:
        assert prompts[1].text == "<phigep> sitting on a bench in central park wearing a black hoodie and pink crocs"
        assert prompts[2].text == "<phigep> playing chess in space"
    assert all(p.width is None and p.seed is None and p.negative is None for p in prompts)
