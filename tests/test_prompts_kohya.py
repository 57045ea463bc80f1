"""kohya's prompt-file rules, one test per rule, each citing the sd-scripts behaviour it mirrors.

Source of truth: kohya-ss/sd-scripts `library/train_util.py` (sd3 merge, PR #2268): `load_prompts` /
`sample_images_common` pick `line.strip()` of lines with `len(line.strip()) > 0 and line[0] != "#"` and
number them in order (`prompt_dict["enum"] = i`, written as `{i:02d}` into the sample file name);
`line_to_prompt_dict` splits on `" --"` and `re.match`es every part, case-insensitively, against
`w (\\d+)`, `h (\\d+)`, `d (\\d+)`, `s (\\d+)` (clamped to 1..1000), `l ([\\d\\.]+)`, `g ([\\d\\.]+)`,
`n (.+)`, `ss (.+)`, `cn (.+)`, `ctr (.+)`, `rcfg (.+)`, `fs (.+)`, and ignores any other part. fluxgym
(cocktailpeanut/fluxgym app.py) writes its prompt box verbatim to `sample_prompts.txt` and runs that parser.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from lora_harness.core.prompts import PromptFileError, PromptFileWarning, line_to_prompt_dict, read_prompt_file


def prompts_of(tmp_path: Path, text: str, name: str = "sample_prompts.txt") -> list[tuple]:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptFileWarning)
        prompts = read_prompt_file(path)
    return [
        (p.prompt_id, p.text, {k: v for k, v in vars(p).items() if k not in ("prompt_id", "text") and v is not None})
        for p in prompts
    ]


# (file text, [(id, text, options)]) as sd-scripts numbers and parses them.
TABLE = [
    pytest.param(  # `line[0] != "#"`: a hash in the first column is a comment ...
        "# comment\na\nb\n", [("00", "a", {}), ("01", "b", {})], id="first-column-comment"),
    pytest.param(  # ... but the test is on the raw line, so an indented "# note" is a prompt with an id
        "a\n   # note\nb\n", [("00", "a", {}), ("01", "# note", {}), ("02", "b", {})], id="indented-hash-is-a-prompt"),
    pytest.param(  # `len(line.strip()) > 0`: blank and whitespace-only lines take no id
        "\n \t \na\n\n\nb\n", [("00", "a", {}), ("01", "b", {})], id="blank-lines"),
    pytest.param(  # open(..., encoding="utf-8") keeps a BOM, so "\ufeff# x" does not start with "#"
        "\ufeff# header\na\n", [("00", "# header", {}), ("01", "a", {})], id="bom-before-hash"),
    pytest.param(  # text-mode readlines: \r\n and a lone \r end lines
        "a\r\nb\rc\n", [("00", "a", {}), ("01", "b", {}), ("02", "c", {})], id="universal-newlines"),
    pytest.param(  # readlines() does not split on form feed / line separator, str.splitlines() would
        "a\x0cb\nc\u2028d\n", [("00", "a\x0cb", {}), ("01", "c\u2028d", {})], id="only-newlines-split"),
    pytest.param(  # each known option, case-insensitive (re.IGNORECASE)
        "p --W 512 --h 768 --D 42 --s 20 --L 3.5 --g 2.5 --n ugly\n",
        [("00", "p", {"width": 512, "height": 768, "seed": 42, "steps": 20, "cfg_scale": 3.5, "guidance": 2.5,
                      "negative": "ugly"})], id="known-options"),
    pytest.param(  # `n (.+)`: the value is kept as written, quotes included
        'p --n "bad hands, blurry"\n', [("00", "p", {"negative": '"bad hands, blurry"'})], id="quotes-kept"),
    pytest.param(  # unknown options (`--ar 3:2`, `--zoom`) are ignored, the line still is a prompt
        "p --ar 3:2 --zoom --d 7\n", [("00", "p", {"seed": 7})], id="unknown-options-ignored"),
    pytest.param(  # kohya-only options without effect on what the image shows are recognised and dropped
        "p --ss euler_a --cn c.png --ctr 0.2 --rcfg 1 --fs 3\n", [("00", "p", {})], id="sampler-options-dropped"),
    pytest.param(  # `s (\d+)` is clamped: max(1, min(1000, int(...)))
        "a --s 5000\nb --s 0\n", [("00", "a", {"steps": 1000}), ("01", "b", {"steps": 1})], id="steps-clamped"),
    pytest.param(  # re.match is a prefix match: "--w 512px" is 512; "--w x" does not match and is ignored
        "a --w 512px\nb --w x\n", [("00", "a", {"width": 512}), ("01", "b", {})], id="prefix-match"),
    pytest.param(  # float("1.2.3") raises ValueError: kohya logs it and ignores the option
        "a --l 1.2.3 --d 4\n", [("00", "a", {"seed": 4})], id="unconvertible-value-ignored"),
    pytest.param(  # a repeated option: the later assignment wins
        "a --d 1 --d 2\n", [("00", "a", {"seed": 2})], id="last-wins"),
    pytest.param(  # split(" --"): "--w" without a space before it stays in the text
        "a cat--w 512\n", [("00", "a cat--w 512", {})], id="needs-space-before-dashes"),
    pytest.param(  # the prompt part is matched too: a prompt starting with "d 5 " sets the seed
        "d 5 dogs\n", [("00", "d 5 dogs", {"seed": 5})], id="prompt-part-matched"),
    pytest.param(  # leading/trailing whitespace of the line goes (line.strip()), inner spacing stays
        "   a  photo   \n", [("00", "a  photo", {})], id="line-stripped"),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_ids_and_options_match_sd_scripts(tmp_path, text, expected):
    assert prompts_of(tmp_path, text) == expected


def test_indented_hash_line_warns_that_it_is_a_prompt(tmp_path):
    path = tmp_path / "sample_prompts.txt"
    path.write_text("a\n  # note\nb\n", encoding="utf-8")
    with pytest.warns(PromptFileWarning, match=r"sample_prompts.txt:2: '# note' is prompt 01 for kohya"):
        read_prompt_file(path)


def test_unknown_option_warns_once_and_says_kohya_ignored_it():
    heard: list[str] = []
    assert line_to_prompt_dict("p --ar 3:2", warn=heard.append) == {"prompt": "p"}
    assert len(heard) == 1 and "--ar 3:2" in heard[0] and "kohya ignored it" in heard[0]


def test_trailing_dashes_are_not_an_option():  # "p --".split(" --") == ["p", ""]: an empty part, no warning
    heard: list[str] = []
    assert line_to_prompt_dict("p --", warn=heard.append) == {"prompt": "p"}
    assert heard == []


def test_toml_prompt_file_merges_prompt_and_subsets(tmp_path):
    # `[dict(**data["prompt"], **subset) for subset in data["prompt"]["subset"]]`
    text = (
        '[prompt]\nwidth = 512\nsample_steps = 20\n\n[[prompt.subset]]\nprompt = "a"\n\n'
        '[[prompt.subset]]\nprompt = "b"\nseed = 3\nnegative_prompt = "ugly"\n'
    )
    assert prompts_of(tmp_path, text, "prompts.toml") == [
        ("00", "a", {"width": 512, "steps": 20}),
        ("01", "b", {"width": 512, "steps": 20, "seed": 3, "negative": "ugly"}),
    ]


def test_toml_key_in_prompt_and_subset_is_an_error_like_in_kohya(tmp_path):
    path = tmp_path / "prompts.toml"
    path.write_text('[prompt]\nseed = 1\n[[prompt.subset]]\nprompt = "a"\nseed = 2\n', encoding="utf-8")
    with pytest.raises(PromptFileError, match="repeats seed"):
        read_prompt_file(path)


def test_json_prompt_file_takes_lines_and_objects_without_comment_rule(tmp_path):
    text = '["# not a comment in json --d 3", {"prompt": "b", "width": 640}]'
    assert prompts_of(tmp_path, text, "prompts.json") == [
        ("00", "# not a comment in json", {"seed": 3}),
        ("01", "b", {"width": 640}),
    ]
