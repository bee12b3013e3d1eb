"""The documentation's examples: Python blocks run, shell lines name real commands and options.

The oracle is the installed program itself: every Python block of a page runs as it
stands (a renamed function or argument fails here), and every ``tiler ...`` line of a
shell block is checked against the click commands (a command, an option or a choice the
program does not have fails here). The site itself is built by ``.ci/run`` with
``mkdocs build --strict`` (broken links and anchors fail CI there).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from tests.conftest import SHARED
from tiler.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(ROOT.glob("docs/**/*.md")) + [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def blocks(page: Path, languages: tuple[str, ...]) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(page.read_text()) if m.group(1) in languages]


def tiler_lines(text: str) -> list[str]:
    """The ``tiler`` command lines of a shell block, continuation lines joined, prompts removed."""
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        for part in re.split(r"&&|;|\|", line):
            part = part.strip()
            # Output lines of a block (a benchmark table's "tiler (numba, streamed) ...") are no command.
            if re.match(r"tiler [a-z][a-z-]*( |$)|tiler$", part):
                out.append(part)
    return out


PYTHON_PAGES = [p for p in PAGES if blocks(p, ("python",))]
SHELL_LINES = [(p, line) for p in PAGES for b in blocks(p, ("", "bash", "console", "sh")) for line in tiler_lines(b)]


def test_the_docs_have_examples_to_check():
    assert PYTHON_PAGES, "no Python examples found in docs/"
    assert len(SHELL_LINES) > 30, len(SHELL_LINES)


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_run(page, tmp_path, monkeypatch):
    """Every Python block of the page, in order, in one namespace, from a checkout's layout."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "shared").symlink_to(SHARED.parent)     # ../shared as seen from the checkout
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__docs__"}
    skipped = []
    for i, code in enumerate(blocks(page, ("python",))):
        if "../shared/" in code and not SHARED.exists():
            skipped.append(i + 1)
            continue
        try:
            exec(compile(code, f"{page.name}, block {i + 1}", "exec"), namespace)
        except Exception as e:  # the block's own exception, named with its page and block
            raise AssertionError(f"{page.relative_to(ROOT)} block {i + 1} failed: {e!r}\n{code}") from e
    if skipped:
        pytest.skip(f"blocks {skipped} read {SHARED}, absent on this machine")


def _command(words: list[str]) -> tuple[click.Command, list[str], str]:
    cmd: click.Command = main
    name = "tiler"
    while isinstance(cmd, click.Group) and words and not words[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), words[0])
        if sub is None:
            raise LookupError(f"{name} has no command {words[0]!r}")
        name, cmd, words = f"{name} {words[0]}", sub, words[1:]
    return cmd, words, name


@pytest.mark.parametrize("page", sorted({p for p, _ in SHELL_LINES}), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_examples_name_real_commands_options_and_choices(page):
    problems = []
    for p, line in SHELL_LINES:
        if p != page:
            continue
        words = shlex.split(line, comments=True)
        # A redirection ends the command's own words.
        words = words[:next((i for i, w in enumerate(words) if w[:1] in "<>" or w[:2] in ("2>", "1>")),
                            len(words))]
        try:
            cmd, words, name = _command(words[1:])
        except LookupError as e:
            problems.append(f"{line}: {e}")
            continue
        options = {o: prm for prm in cmd.params if isinstance(prm, click.Option) for o in prm.opts + prm.secondary_opts}
        options.update({"-h": None, "--help": None})
        for i, w in enumerate(words):
            if not w.startswith("-") or w == "-" or re.fullmatch(r"-\d.*", w):
                continue
            opt, _, value = w.partition("=")
            if opt not in options:
                problems.append(f"{line}: {name} has no option {opt}")
                continue
            prm = options[opt]
            if prm is None or not isinstance(prm.type, click.Choice) or prm.is_flag:
                continue
            value = value or (words[i + 1] if i + 1 < len(words) else "")
            # A placeholder (NAME, N, a|b list in a synopsis) is not a value to check.
            if value and not value.isupper() and "|" not in value and value not in prm.type.choices:
                problems.append(f"{line}: {opt} {value!r} is not one of {list(prm.type.choices)}")
    assert not problems, "\n".join(problems)


def test_every_command_is_in_the_guide():
    """Each command of ``tiler --help`` appears in a shell example of the docs."""
    used = {shlex.split(line, comments=True)[1] for _, line in SHELL_LINES if len(line.split()) > 1}
    commands = set(main.list_commands(click.Context(main)))
    assert commands - used == set(), f"commands without an example in the docs: {sorted(commands - used)}"


def test_readme_links_resolve():
    """The README is read on GitHub and PyPI, outside the site: its relative links must exist."""
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]
    assert targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing



@pytest.mark.parametrize("package", ["tiler.model", "tiler.scene", "tiler.training"])
def test_lazy_packages_list_their_names_for_readers_and_for_the_api_reference(package):
    """A package whose names load on first use (PEP 562) still says them statically: ``__all__`` is the
    lazy table's keys, each name resolves, and each is imported under ``TYPE_CHECKING`` (what mkdocstrings
    reads: without it the API reference page of the package was empty)."""
    import ast
    import importlib

    mod = importlib.import_module(package)
    assert sorted(mod.__all__) == sorted(mod._EXPORTS)
    for name in mod.__all__:
        assert getattr(mod, name) is getattr(importlib.import_module(f"{package}.{mod._EXPORTS[name]}"), name)
    tree = ast.parse(Path(mod.__file__).read_text())
    checked = [node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") ==
               "TYPE_CHECKING"]
    static = {a.asname or a.name for node in checked for imp in node.body if isinstance(imp, ast.ImportFrom)
              for a in imp.names}
    assert static == set(mod.__all__)
