"""The README's API section stays in step with the code.

Argument names come from `inspect.signature` and from the docstrings, so a new
argument fails here until the README documents it; an argument the README still
lists after it was removed fails too.
"""

import inspect
import re
from pathlib import Path

import pytest

from luong_attention import LuongAttention, functional, luong_attention

README = Path(__file__).resolve().parent.parent / "README.md"


def api_section():
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- api -->")
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else len(text)]


def blocks(section):
    """`(signature code block, names in the first column of the table after it)`."""
    found = []
    for match in re.finditer(r"```python\n(.*?)```", section, re.S):
        rest = section[match.end() :]
        table = re.search(r"\n((?:\|.*\n)+)", rest)
        names = []
        if table and not rest[: table.start()].count("```"):
            for row in table.group(1).splitlines()[2:]:
                cell = row.split("|")[1]
                names.append(re.fullmatch(r"\s*`(\*{0,2}\w+)`\s*", cell).group(1))
        found.append((match.group(1), names))
    return found


def parameters(function, skip=("self",)):
    names = []
    for p in inspect.signature(function).parameters.values():
        if p.name in skip:
            continue
        names.append(("**" if p.kind is p.VAR_KEYWORD else "") + p.name)
    return names


def documented(docstring, header):
    """Argument names listed under `header:` in a Google-style docstring."""
    text = inspect.cleandoc(docstring)
    section = text.split(f"\n{header}:\n", 1)[1]
    section = re.split(r"\n\S", section, maxsplit=1)[0]
    return re.findall(r"^    (\*{0,2}\w+):", section, re.M)


def squeeze(code):
    return re.sub(r"\s+", "", code).replace(",)", ")")


def find_block(prefix):
    matches = [(code, names) for code, names in blocks(api_section()) if code.startswith(prefix)]
    assert len(matches) == 1, f"expected one ```python block starting {prefix!r} in the API section"
    return matches[0]


CASES = {
    "constructor": ("LuongAttention(", LuongAttention.__init__, "LuongAttention"),
    "call": ("layer(", LuongAttention.call, "layer"),
    "function": ("luong_attention(", luong_attention, "luong_attention"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_signature_block_matches_code(case):
    prefix, function, shown_as = CASES[case]
    code, _ = find_block(prefix)
    signature = inspect.signature(function)
    if "self" in signature.parameters:
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    assert squeeze(code) == squeeze(f"{shown_as}{signature}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_table_lists_every_argument(case):
    prefix, function, _ = CASES[case]
    _, names = find_block(prefix)
    assert names == parameters(function)


@pytest.mark.parametrize(
    "docstring, header, prefix",
    [
        (LuongAttention.__doc__, "Args", "LuongAttention("),
        (LuongAttention.__doc__, "Call arguments", "layer("),
        (luong_attention.__doc__, "Args", "luong_attention("),
    ],
)
def test_docstring_arguments_are_in_readme(docstring, header, prefix):
    names = documented(docstring, header)
    assert names, f"no arguments found under {header}: in the docstring"
    _, table = find_block(prefix)
    assert set(names) <= set(table), sorted(set(names) - set(table))


@pytest.mark.parametrize(
    "options", [functional.SCORE_MODES, functional.CAUSAL_ALIGNMENTS, functional.IMPLEMENTATIONS]
)
def test_every_option_value_is_in_readme(options):
    section = api_section()
    missing = [value for value in options if f'`"{value}"`' not in section]
    assert not missing
