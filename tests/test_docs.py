"""The documentation: the site builds strictly (broken links and missing pages fail), README stays short and its
commands are ones the command lines accept, and every registered strategy, stream and backbone is documented."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import run_suite
from benchmark.backbones import BACKBONES
from benchmark.streams import STREAMS
from conftest import builtin_strategies

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def docs_text() -> str:
    return "\n".join(page.read_text() for page in sorted(DOCS.rglob("*.md")))


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install .[docs])")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                            "-d", str(tmp_path / "site")], capture_output=True, text=True,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "recipes" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "build_strategy" in api and "resolve_recipe" in api  # the API reference came from the docstrings


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert pages and not {page for page in pages if page not in nav}


def test_readme_is_short_and_its_commands_parse():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]
    suites = [shlex.split(c)[2:] for c in commands if c.startswith("python run_suite.py")]
    assert suites and all(run_suite.parse_args(argv) for argv in suites)
    makefile = (ROOT / "Makefile").read_text()
    for target in (c.split()[1] for c in commands if c.startswith("make ")):
        assert re.search(rf"^{target}:", makefile, re.M), target
    reports = [c for c in commands if c.startswith("python -m reports")]
    assert reports and all(len(shlex.split(c)) >= 4 for c in reports)
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link


def test_every_registered_component_is_documented():
    text = docs_text()
    missing = [f"strategy {name}" for name in builtin_strategies() if f"`{name}`" not in text]
    missing += [f"stream {name}" for name in STREAMS.names() if f"`{name}`" not in text]
    missing += [f"backbone {name}" for name in BACKBONES.names() if f"`{name}`" not in text]
    assert not missing
