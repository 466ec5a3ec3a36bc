"""The README stays true: every setting listed, a two-command quick start, ``make test``.

Rewrite the README's settings table after changing ``hotline.settings.Settings``::

    .venv/bin/python tests/hotline/test_readme.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from hotline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAKEFILE = REPO / "Makefile"
TEST_COMMAND = ".venv/bin/python -m pytest"
EMPTY = "(empty)"


def env_name(field: str) -> str:
    return f"HOTLINE_{field.upper()}"


def render_default(field: FieldInfo) -> str:
    """The default as it would be written in the environment."""
    value: Any = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def settings_table() -> str:
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = render_default(field)
        shown = f"`{default}`" if default else EMPTY
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{env_name(name)}` | {shown} | {description} |")
    return "\n".join(rows)


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        if all(set(c) <= set("-: ") for c in cells):
            continue
        rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def documented(readme: str) -> dict[str, tuple[str, str]]:
    rows = table_rows(section(readme, "Settings"))
    assert rows, "no settings table"
    assert rows[0][:3] == ["Variable", "Default", "Description"], rows[0]
    result = {}
    for cells in rows[1:]:
        assert len(cells) == 3, f"settings row with {len(cells)} cells: {cells}"
        variable, default, description = cells
        assert re.fullmatch(r"`HOTLINE_[A-Z0-9_]+`", variable), variable
        assert variable.strip("`") not in result, f"{variable} listed twice"
        result[variable.strip("`")] = (default, description)
    return result


def test_every_setting_has_a_description() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert not missing, f"settings without a description: {missing}"


def test_settings_table_lists_exactly_the_settings(documented: dict[str, tuple[str, str]]) -> None:
    expected = {env_name(name) for name in Settings.model_fields}
    assert set(documented) == expected, (
        f"missing from README: {sorted(expected - set(documented))}; "
        f"not settings: {sorted(set(documented) - expected)}; "
        "regenerate with: .venv/bin/python tests/hotline/test_readme.py"
    )


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_settings_table_default_and_description(
    name: str, documented: dict[str, tuple[str, str]]
) -> None:
    field = Settings.model_fields[name]
    default, description = documented.get(env_name(name), ("", ""))
    rendered = render_default(field)
    if default == EMPTY:
        assert rendered == "", f"{env_name(name)}: README says empty, default is {rendered!r}"
    elif default.startswith("`") and default.endswith("`"):
        assert default.strip("`") == rendered, (
            f"{env_name(name)}: README {default}, code {rendered!r}"
        )
    else:  # a default described in words (computed defaults)
        assert default, f"{env_name(name)}: no default shown"
    normalised = " ".join((field.description or "").split())
    assert description.replace("\\|", "|") == normalised, f"{env_name(name)}: description differs"


def test_quick_start_is_two_commands(readme: str) -> None:
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", section(readme, "Quick start"), re.M | re.S)
    assert blocks, "no code block in the quick start"
    commands = [
        line.strip()
        for line in blocks[0].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert commands == ["make run", "make test"]


def makefile_recipe(target: str) -> list[str]:
    lines = MAKEFILE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{re.escape(target)}\s*:", line))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().lstrip("@-+").strip())
    return recipe


def test_make_test_runs_pytest_in_the_venv() -> None:
    assert any(line.startswith(TEST_COMMAND) for line in makefile_recipe("test"))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_dry_run_shows_the_test_command() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "test"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert any(line.startswith(TEST_COMMAND) for line in result.stdout.splitlines()), result.stdout


def test_ci_runs_make_test() -> None:
    ci = REPO / ".ci" / "run"
    if not ci.exists():
        pytest.skip(".ci/run is not there yet")
    assert "make test" in ci.read_text(encoding="utf-8")


def test_readme_names_every_marker(readme: str) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    markers = [m.split(":")[0] for m in pyproject["tool"]["pytest"]["ini_options"]["markers"]]
    missing = [m for m in markers if f"`{m}`" not in readme]
    assert not missing, f"markers not explained in the README: {missing}"


def test_readme_links_resolve(readme: str) -> None:
    links = re.findall(r"\]\(((?!https?:|#|mailto:)[^)#\s]+)", readme)
    assert links
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def write_settings_table() -> None:
    """Replace the table in the README's Settings section with the current one."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Settings\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "README has no '## Settings' section"
    lines = match.group(1).splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("| Variable"))
    last = first
    while last + 1 < len(lines) and lines[last + 1].strip().startswith("|"):
        last += 1
    body = "\n".join([*lines[:first], settings_table().strip(), *lines[last + 1 :]])
    if match.group(1).endswith("\n"):
        body += "\n"
    README.write_text(text[: match.start(1)] + body + text[match.end(1) :], encoding="utf-8")


if __name__ == "__main__":
    write_settings_table()
