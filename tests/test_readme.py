"""The README's promises: its Python snippets run as written, its install advice names real extras.

Each ```python block of README.md runs on its own (a fresh namespace, so a missing import is a
failure) in a temporary working folder. The test makes only what a reader would already have:
the files a snippet names (``photo.jpg``, ``photos/``, ``runs/mine/model``) and the variables
the API overview takes as given (``images``, ``k``). A block that truly needs the network says
so on a line starting with ``# not run in tests:``; it is then only compiled.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

import vtok
from vtok.demo import sample_images

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs Python 3.11 or tomli")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP_MARKER = "# not run in tests:"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def python_blocks(markdown: str) -> list[tuple[int, str]]:
    """(line number, dedented source) of every ```python block, indented ones (in lists) included."""
    blocks = []
    for m in _FENCE.finditer(markdown):
        line = markdown.count("\n", 0, m.start("body")) + 1
        blocks.append((line, textwrap.dedent(m["body"])))
    return blocks


BLOCKS = python_blocks(README.read_text())
RUN = [(line, code) for line, code in BLOCKS if SKIP_MARKER not in code]
SKIPPED = [(line, code) for line, code in BLOCKS if SKIP_MARKER in code]


def _photo(size: tuple[int, int]) -> Image.Image:
    """A bundled sample photo, shrunk: snippets are checked for running, not for speed."""
    return Image.open(sample_images()[1]).convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _prepare(code: str, cwd: Path) -> dict:
    """Make the files `code` names and return the namespace it runs in (the reader's variables)."""
    _photo((240, 160)).save(cwd / "photo.jpg", quality=90)
    if "photos/" in code:
        (cwd / "photos").mkdir()
        for i, path in enumerate(sample_images()[:2]):
            Image.open(path).convert("RGB").resize((128, 128)).save(cwd / "photos" / f"{i}.png")
    if "runs/mine/model" in code:
        torch.manual_seed(0)
        vtok.create_tokenizer("ordered1d-tiny").save_pretrained(cwd / "runs" / "mine" / "model")
    return {"__name__": "__readme__", "images": ["photo.jpg"], "k": 8}


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 3, "the README's ```python blocks were not found"


@pytest.mark.slow
@pytest.mark.parametrize("line, code", RUN, ids=[f"README.md:{line}" for line, _ in RUN])
def test_readme_python_snippet_runs(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = _prepare(code, tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), namespace)


def test_readme_skips_only_what_needs_the_network():
    """Snippets left out of the run are few, say why, and still parse."""
    assert len(SKIPPED) <= 1, [line for line, _ in SKIPPED]
    for line, code in SKIPPED:
        marker = next(text for text in code.splitlines() if SKIP_MARKER in text)
        assert "network" in marker, f"README.md:{line}: say why the snippet cannot run in tests"
        compile(code, f"README.md:{line}", "exec")


# -- install advice --------------------------------------------------------------------------


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _norm(requirement: str) -> str:
    """A requirement's project name, normalised as pip compares them (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _advice_files() -> list[Path]:
    files = [README, ROOT / "pyproject.toml", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("src", "benchmarks", "scripts"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def test_install_advice_names_extras_that_exist():
    """Every ``vtok[extra]`` / ``.[extra]`` the docs or messages advise is an extra pyproject defines."""
    extras = set(_extras())
    advised = []
    for path in _advice_files():
        text = path.read_text(errors="replace")
        for m in re.finditer(r"(?:\bvtok|[\"'\s]\.)\[([\w, -]+)\]", text):
            advised += [(path.relative_to(ROOT), name.strip()) for name in m[1].split(",")]
    assert advised, "no install advice found at all: the pattern is broken"
    assert [(p, name) for p, name in advised if name not in extras] == []


def _optional_dependency_calls() -> list[tuple[str, str, str]]:
    """(file:line, package, extra) of every ``OptionalDependencyError(package, extra, ...)`` in src."""
    calls = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "OptionalDependencyError":
                args = {**dict(zip(("package", "extra"), node.args)), **{k.arg: k.value for k in node.keywords}}
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                assert all(isinstance(args.get(k), ast.Constant) for k in ("package", "extra")), where
                calls.append((where, args["package"].value, args["extra"].value))
    return calls


def test_optional_dependency_errors_advise_an_extra_that_installs_the_package():
    calls = _optional_dependency_calls()
    assert len(calls) >= 3, "no OptionalDependencyError calls found: the scan is broken"
    extras = _extras()
    wrong = [
        (where, package, extra)
        for where, package, extra in calls
        if _norm(package) not in {_norm(r) for r in extras.get(extra, [])}
    ]
    assert wrong == []


def test_create_tokenizer_documents_what_it_returns():
    doc = vtok.create_tokenizer.__doc__
    assert "Returns:" in doc and "untrained :class:`Tokenizer`" in doc
    tok = vtok.create_tokenizer("ordered1d-tiny")
    assert type(tok) is vtok.Tokenizer and tok.prior is None
