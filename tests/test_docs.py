"""The code in the docs runs: the site's and README's ```python blocks, and the docstring examples.

Each page's ```python blocks run in order in one namespace, so a later block
may use what an earlier one defined. Blocks fenced as anything else (bash,
text) are not run. The docstring examples (`>>>`) of every module of the
package run as doctests. All of it runs on the backend KERAS_BACKEND names.
"""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import luong_attention

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks(path):
    return FENCE.findall(path.read_text(encoding="utf-8"))


def test_pages_have_code():
    # Guards the extraction itself: the getting-started page shows code.
    assert python_blocks(ROOT / "docs" / "index.md")
    assert python_blocks(ROOT / "README.md")


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if python_blocks(p)],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_page_code_runs(page, capsys):
    namespace = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(python_blocks(page), start=1):
        code = compile(block, f"{page.relative_to(ROOT)} (block {number})", "exec")
        exec(code, namespace)
    # Every page that shows code prints something a reader can check.
    assert capsys.readouterr().out.strip()


def _doctests():
    finder = doctest.DocTestFinder()
    names = [luong_attention.__name__] + [
        info.name
        for info in pkgutil.walk_packages(luong_attention.__path__, luong_attention.__name__ + ".")
    ]
    found = []
    for name in names:
        module = importlib.import_module(name)
        found.extend(t for t in finder.find(module, name) if t.examples)
    # One test per docstring; a re-exported object is found once per module.
    return list({t.name: t for t in found}.values())


DOCTESTS = _doctests()


def test_package_has_docstring_examples():
    assert DOCTESTS


@pytest.mark.parametrize("test", DOCTESTS, ids=lambda t: t.name)
def test_docstring_examples(test):
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed in {test.name}"
    )
