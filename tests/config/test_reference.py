"""The configuration reference (docs/configuration.md) agrees with the schema it is generated from."""

from __future__ import annotations

import re
import subprocess
import sys
import typing

from pydantic import BaseModel

from bench.config import reference, schema


def _models_below(model: type[BaseModel]) -> list[type[BaseModel]]:
    """Every pydantic model reachable from ``model`` through field types, walked independently of
    ``bench.config.reference`` (anything that mentions a model class counts)."""
    found: list[type[BaseModel]] = []

    def classes_in(annotation: typing.Any) -> list[type]:
        out = [annotation] if isinstance(annotation, type) else []
        for arg in typing.get_args(annotation):
            out.extend(classes_in(arg))
        return out

    def visit(current: type[BaseModel]) -> None:
        if current in found:
            return
        found.append(current)
        for field in current.model_fields.values():
            for cls in classes_in(field.annotation):
                if issubclass(cls, BaseModel):
                    visit(cls)

    visit(model)
    return found


def _sections_of(text: str) -> dict[str, str]:
    """Model name → the section body that names it (``Model: `Name`.``)."""
    bodies = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    out = {}
    for body in bodies:
        named = re.search(r"^Model: `(\w+)`", body, flags=re.MULTILINE)
        assert named, f"section without a model line: {body.splitlines()[0]}"
        out[named.group(1)] = body
    return out


def test_committed_reference_equals_render():
    committed = reference.DOC_PATH.read_text(encoding="utf-8")
    assert committed == reference.render(), (
        "docs/configuration.md differs from the schema: run python -m bench.config.reference"
    )


def test_every_field_of_every_section_is_in_the_reference():
    models = _models_below(schema.BenchmarkConfig)
    # the walk reaches the nested sections, a search range and a regularizer entry included
    for expected in (
        schema.DataConfig,
        schema.SearchConfig,
        schema.AshaConfig,
        schema.RangeSpec,
        schema.RegularizerEntry,
        schema.FinalConfig,
    ):
        assert expected in models
    sections = _sections_of(reference.render())
    for model in models:
        assert model.__name__ in sections, f"{model.__name__} has no section"
        rows = re.findall(r"^\| `(\w+)` \|", sections[model.__name__], flags=re.MULTILINE)
        assert rows == list(model.model_fields), f"{model.__name__}: keys {rows} != fields {list(model.model_fields)}"


def test_every_field_has_a_description():
    for model in _models_below(schema.BenchmarkConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no Field(description=...)"


def test_a_field_without_description_is_refused(monkeypatch):
    field = schema.AshaConfig.model_fields["grace_period"]
    monkeypatch.setattr(field, "description", None)
    try:
        reference.render()
    except ValueError as error:
        assert "AshaConfig.grace_period" in str(error)
    else:
        raise AssertionError("render() accepted a field without a description")


def test_bounds_defaults_and_choices_are_rendered():
    sections = _sections_of(reference.render())
    training = sections["TrainingConfig"]
    assert re.search(r"^\| `momentum` \| float \| `0.9` \| ≥ 0, < 1 \|", training, flags=re.MULTILINE)
    assert "`cosine` \\| `constant`" in training
    assert re.search(r"^\| `regularizers` \| .* \| \*required\* \|", sections["BenchmarkConfig"], flags=re.MULTILINE)


def test_check_mode_exits_1_on_a_stale_file(tmp_path, repo_root):
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    command = [sys.executable, "-m", "bench.config.reference", "--check", "--out", str(stale)]
    result = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "out of date" in result.stderr
    assert stale.read_text(encoding="utf-8") == "# old\n"
    assert reference.main(["--out", str(stale)]) == 0
    assert reference.main(["--check", "--out", str(stale)]) == 0
