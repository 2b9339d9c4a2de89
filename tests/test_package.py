"""The wheel a user installs carries the README as a page a package index can render.

The wheel is built from a copy of the project's sources (pyproject.toml, README.md, LICENSE, src/),
so the build's own folders never land in this checkout, where an ``*.egg-info`` beside the
sources would register the plugin's entry points a second time. ``twine check --strict`` is the
check PyPI's upload makes: a README that does not render is refused there.
"""
from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# building the wheel takes 5-10 s on a 2-core machine
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel once, without build isolation: no package index is needed."""
    tree = tmp_path_factory.mktemp("tree")
    for name in SOURCES:
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "src", tree / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (whl,) = out.glob("pytest_quantperf-*.whl")
    return whl


def _metadata(whl: Path) -> email.message.Message:
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


def test_the_wheel_passes_twine_check(wheel: Path) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel)],
        capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "PASSED" in check.stdout


def test_the_readme_renders_as_markdown_on_a_package_index(wheel: Path) -> None:
    from readme_renderer.markdown import render

    meta = _metadata(wheel)
    assert meta["Description-Content-Type"].startswith("text/markdown")
    description = meta.get_payload(decode=True).decode("utf-8")
    assert description.strip() == (ROOT / "README.md").read_text(encoding="utf-8").strip()
    html = render(description)
    # None is what readme_renderer gives when it cannot render (no Markdown renderer installed)
    assert html is not None, "readme_renderer has no Markdown renderer: pip install 'readme-renderer[md]'"
    title = next(ln for ln in description.splitlines() if ln.startswith("# "))[2:].strip()
    assert f">{title}<" in html


def test_the_wheel_ships_the_licence_and_the_built_in_data(wheel: Path) -> None:
    meta = _metadata(wheel)
    assert meta["License"] == "MIT" or meta.get("License-Expression") == "MIT"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    licence = [n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n]
    assert licence, names
    with zipfile.ZipFile(wheel) as z:
        assert b"MIT License" in z.read(licence[0])
    assert any(n.startswith("pytest_quantperf/data/") for n in names)
    assert any(n.startswith("pytest_quantperf/report/templates/") for n in names)
