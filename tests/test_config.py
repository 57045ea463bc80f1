"""The eval config: typed loading, paths relative to the file, overrides, and errors that name the file,
the key, the bad value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lora_harness.core.config import ConfigError, EvalConfig, load_config, parse_config
from lora_harness.core.images import DEFAULT_PIXEL_LIMIT

REPO = Path(__file__).resolve().parents[1]

VALID = """
[run]
name = "my-run"
report_dir = "out/reports"
image_pixel_limit = 1000000

[[sources]]
path = "samples/r4"

[[sources]]
path = "/abs/samples/r32"
prompts = "prompts/r32.txt"
name = "rank-32"
loraname = "lora-r32"
ignore_unmatched = true
on_duplicate = "latest"

[person]
references = ["refs", "/abs/face.png"]
trigger = "<phigep>"
description = "a woman"

[[judges]]
name = "image_stats"
options = { max_side = 256 }

[thresholds.spectral_score]
image = 0.5
checkpoint = 0.6

[thresholds.magnitude_score]
checkpoint = 0.7

[gate]
checkpoints = [800, 1000]
"""

MINIMAL = """
[[sources]]
path = "samples"

[[judges]]
name = "image_stats"
"""


def write_config(tmp_path: Path, text: str, name: str = "lora_eval.toml") -> Path:
    folder = tmp_path / "conf"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problem_lines(exc: pytest.ExceptionInfo) -> list[str]:
    return [line.strip() for line in str(exc.value).splitlines()[1:]]


def test_valid_config_loads_into_typed_models(tmp_path, monkeypatch):
    path = write_config(tmp_path, VALID)
    monkeypatch.chdir(tmp_path)  # any working directory: paths follow the config file
    config = load_config(Path("conf/lora_eval.toml"))
    base = path.parent.resolve()
    assert config.run.name == "my-run"
    assert config.run.report_dir == base / "out" / "reports"
    assert config.run_dir == base / "out" / "reports" / "my-run"
    assert config.run.image_pixel_limit == 1_000_000
    first, second = config.sources
    assert first.path == base / "samples" / "r4"
    assert first.prompts is None and first.ignore_unmatched is False and first.on_duplicate == "error"
    assert second.path == Path("/abs/samples/r32")
    assert second.prompts == base / "prompts" / "r32.txt"
    assert (second.name, second.loraname, second.ignore_unmatched, second.on_duplicate) == (
        "rank-32", "lora-r32", True, "latest",
    )
    assert config.person.references == [base / "refs", Path("/abs/face.png")]
    assert config.person.trigger == "<phigep>"
    assert [(j.name, j.options) for j in config.judges] == [("image_stats", {"max_side": 256})]
    assert config.thresholds["spectral_score"].image == 0.5
    assert config.thresholds["spectral_score"].checkpoint == 0.6
    assert config.thresholds["magnitude_score"].image is None
    assert config.gate.checkpoints == [800, 1000]
    assert config.path == Path("conf/lora_eval.toml")


def test_defaults(tmp_path):
    path = write_config(tmp_path, MINIMAL)
    config = load_config(path)
    assert config.run.name == "lora-eval"
    assert config.run.report_dir == path.parent.resolve() / "reports"
    assert config.run.image_pixel_limit == DEFAULT_PIXEL_LIMIT
    assert config.gate.checkpoints == "latest"
    assert config.thresholds == {}
    assert config.person.references == []


def test_config_is_immutable(tmp_path):
    config = load_config(write_config(tmp_path, MINIMAL))
    with pytest.raises(ValidationError):
        config.run.name = "other"  # type: ignore[misc]


def test_shipped_eval_config_loads_and_points_at_existing_folders():
    config = load_config(REPO / "evals" / "lora_eval.toml")
    assert config.sources and all(source.path.is_dir() for source in config.sources)
    assert all(ref.exists() for ref in config.person.references)
    assert config.run.report_dir == REPO / "reports"


@pytest.mark.parametrize("gate", ["latest", "all", [200], [800, 1000]])
def test_valid_gate_specs(tmp_path, gate):
    config = load_config(write_config(tmp_path, MINIMAL), {"gate.checkpoints": gate})
    assert config.gate.checkpoints == gate


def test_overrides_use_dotted_keys_and_win_over_the_file(tmp_path):
    path = write_config(tmp_path, VALID)
    config = load_config(
        path,
        {
            "run.name": "override",
            "run.report_dir": str(tmp_path / "elsewhere"),
            "gate.checkpoints": "all",
            "thresholds.spectral_score.image": 0.9,
            "sources": [{"path": str(tmp_path / "cli-samples")}],
        },
    )
    assert config.run.name == "override"
    assert config.run.report_dir == tmp_path / "elsewhere"
    assert config.run.image_pixel_limit == 1_000_000  # untouched keys keep the file's values
    assert config.gate.checkpoints == "all"
    assert config.thresholds["spectral_score"].image == 0.9
    assert config.thresholds["spectral_score"].checkpoint == 0.6
    assert [s.path for s in config.sources] == [tmp_path / "cli-samples"]


def test_override_creates_missing_sections_and_relative_paths_follow_the_config(tmp_path):
    path = write_config(tmp_path, MINIMAL)
    config = load_config(path, {"gate.checkpoints": [400], "run.report_dir": "rel"})
    assert config.gate.checkpoints == [400]
    assert config.run.report_dir == path.parent.resolve() / "rel"


def test_judge_model_folders_and_env_files_are_relative_to_the_config(tmp_path, monkeypatch):
    path = write_config(tmp_path, MINIMAL + """
[[judges]]
name = "clip_score"
options = { model = "models/clip" }

[[judges]]
name = "dino"
options = { model = "./models/not-downloaded" }

[[judges]]
name = "clip_i"
options = { model = "openai/clip-vit-base-patch16" }

[[judges]]
name = "llm_rubric"
options = { model = "gpt-4o", env_file = "secrets/.env" }
""")
    (path.parent / "models" / "clip").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # pytest started from another folder: the config's folder still counts
    options = {j.name: j.options for j in load_config(path).judges}
    base = path.parent.resolve()
    assert options["clip_score"]["model"] == str(base / "models" / "clip")
    assert options["dino"]["model"] == str(base / "models" / "not-downloaded")  # written as a path: where it looked
    assert options["clip_i"]["model"] == "openai/clip-vit-base-patch16"  # a hub id stays one
    assert options["llm_rubric"] == {"model": "gpt-4o", "env_file": str(base / "secrets" / ".env")}
    assert options["image_stats"] == {}


def test_overrides_are_validated_too(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, MINIMAL), {"gate.checkpoints": "newest"})
    assert "gate.checkpoints" in str(info.value)
    assert "'newest'" in str(info.value)


def test_override_of_a_key_that_is_not_a_table(tmp_path):
    path = write_config(tmp_path, 'gate = "latest"\n' + MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_config(path, {"gate.checkpoints": "all"})
    assert "gate.checkpoints" in str(info.value)
    assert "[gate]" in str(info.value)


@pytest.mark.parametrize(
    ("extra", "line_start", "suggestion", "allowed"),
    [
        ('[run]\nnmae = "x"\n', "run.nmae:", "name", "name, report_dir, image_pixel_limit"),
        ("[gates]\ncheckpoints = 'all'\n", "gates:", "gate", "run, sources, person, judges, thresholds, gate"),
        ("[thresholds.spectral_score]\nimgae = 0.5\n", "thresholds.spectral_score.imgae:", "image", "image, checkpoint"),
        ("[gate]\ncheckpoint = 'all'\n", "gate.checkpoint:", "checkpoints", "checkpoints"),
        ("[person]\nreference = ['a.png']\n", "person.reference:", "references", "references, trigger"),
    ],
)
def test_unknown_key_says_did_you_mean(tmp_path, extra, line_start, suggestion, allowed):
    path = write_config(tmp_path, MINIMAL + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: invalid config")
    [line] = [line for line in problem_lines(info) if line.startswith(line_start)]
    assert f"unknown key (did you mean '{suggestion}'?)" in line
    listed = line.split("allowed keys: ", 1)[1].split(", ")
    assert set(allowed.split(", ")) <= set(listed)  # other sections may be added; these stay


def test_unknown_key_in_a_list_entry(tmp_path):
    path = write_config(tmp_path, '[[sources]]\npath = "s"\nignore_unmached = true\n\n[[judges]]\nname = "image_stats"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "sources.0.ignore_unmached: unknown key (did you mean 'ignore_unmatched'?)" in str(info.value)


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path):
    path = write_config(tmp_path, MINIMAL + "[run]\nzzz = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = problem_lines(info)
    assert line.startswith("run.zzz: unknown key; allowed keys: name, report_dir, image_pixel_limit")
    assert "did you mean" not in line


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        ('"newest"', "or a list of training steps such as [800, 1000] (got 'newest')"),
        ("[]", "gate.checkpoints: an empty list gates nothing"),
        ("[800.5]", "(got [800.5])"),
        ("true", "or a list of training steps such as [800, 1000] (got True)"),
    ],
)
def test_bad_gate_spec(tmp_path, gate, expected):
    path = write_config(tmp_path, MINIMAL + f"[gate]\ncheckpoints = {gate}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = problem_lines(info)  # one sentence, not one error per union branch
    assert line.startswith("gate.checkpoints: ")
    assert "'latest', 'all'" in line
    assert expected in line


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[run]\nname = "bad name/x"\n', "run.name: String should match pattern"),
        ("[run]\nimage_pixel_limit = 0\n", "run.image_pixel_limit: Input should be greater than 0 (got 0)"),
        ('[run]\nimage_pixel_limit = "big"\n', "(got 'big')"),
        ('[thresholds.spectral_score]\nimage = "high"\n', "thresholds.spectral_score.image"),
    ],
)
def test_bad_values_name_key_and_value(tmp_path, extra, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, MINIMAL + extra))
    assert expected in str(info.value)


def test_bad_on_duplicate_lists_the_allowed_values(tmp_path):
    text = '[[sources]]\npath = "s"\non_duplicate = "newest"\n\n[[judges]]\nname = "image_stats"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, text))
    assert "sources.0.on_duplicate: Input should be 'error' or 'latest' (got 'newest')" in str(info.value)


def test_several_problems_are_reported_together(tmp_path):
    text = '[run]\nnmae = "x"\n\n[[sources]]\npth = "s"\n\n[[judges]]\nname = "image_stats"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, text))
    assert "(3 problem(s))" in str(info.value)
    lines = problem_lines(info)
    assert any(line.startswith("run.nmae:") for line in lines)
    assert any(line.startswith("sources.0.pth:") for line in lines)
    assert "sources.0.path: Field required" in lines


def test_invalid_toml_names_the_file_and_position(tmp_path):
    path = write_config(tmp_path, MINIMAL + "[run\nname = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not valid TOML")
    assert "line" in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value)
    assert "--lora-config" in str(info.value)


@pytest.mark.parametrize("section", ["sources", "judges"])
def test_empty_lists(tmp_path, section):
    data = {"sources": [{"path": "s"}], "judges": [{"name": "image_stats"}], section: []}
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=tmp_path, source=tmp_path / "c.toml")
    [line] = problem_lines(info)
    assert line.startswith(f"{section}: List should have at least 1 item")


def test_missing_sources(tmp_path):
    path = write_config(tmp_path, '[[judges]]\nname = "image_stats"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert problem_lines(info) == ["sources: Field required"]


def test_judge_listed_twice_without_echoing_the_config(tmp_path):
    text = MINIMAL + '\n[[judges]]\nname = "image_stats"\noptions = { api_key = "sk-secret-123" }\n'
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, text))
    assert "judge(s) listed twice: image_stats" in str(info.value)
    assert "sk-secret-123" not in str(info.value)


def test_model_validate_directly_rejects_unknown_keys():
    with pytest.raises(ValidationError):
        EvalConfig.model_validate({"sources": [{"path": "s"}], "judges": [{"name": "x"}], "extra": 1})
