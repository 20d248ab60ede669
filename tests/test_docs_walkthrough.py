"""docs/walkthrough/*.md run as tests: every ```python block of a page is executed, in order, in
one namespace, so the walkthrough cannot drift from the code it explains. The paths and the
ref/kernels names a page mentions must exist too.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALKTHROUGH = os.path.join(ROOT, "docs", "walkthrough")
PAGES = sorted(f for f in os.listdir(WALKTHROUGH) if f.endswith(".md"))


def python_blocks(text):
    """The ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\nb\n```\nnot python\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]


@pytest.mark.parametrize("page", PAGES)
def test_walkthrough_code_runs(page, capsys):
    text = open(os.path.join(WALKTHROUGH, page), encoding="utf-8").read()
    blocks = python_blocks(text)
    assert blocks, f"{page}: no ```python block to run"
    namespace = {"__name__": "walkthrough"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{page} (python block {i + 1})", "exec")
        exec(code, namespace)  # an assert in the page that fails fails here, named by block


@pytest.mark.parametrize("page", PAGES)
def test_walkthrough_names_exist(page):
    from tinyroots import kernels, ref
    text = open(os.path.join(WALKTHROUGH, page), encoding="utf-8").read()
    for path in set(re.findall(r"`((?:csrc|tinyroots|tests|docs)/[\w./]+)", text)):
        path = path.split("::")[0]
        assert os.path.exists(os.path.join(ROOT, path)), f"{page} names {path}, which is gone"
    for module, name in set(re.findall(r"`(ref|kernels)\.(\w+)", text)):
        owner = ref if module == "ref" else kernels
        assert hasattr(owner, name), f"{page} names {module}.{name}, which is gone"
