"""The READMEs' Python snippets run as written, with released-name checkpoints in $VIDEOMAMBA_CHECKPOINTS.

Every ```python block of the top-level README and of each task README is executed in a fresh
namespace, in a temporary working folder, with small synthetic checkpoints under the released file
names (random weights of the right architecture: the snippets only need files that fit).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch

import videomamba  # noqa: F401  (registers the models in timm)

REPO = Path(__file__).resolve().parents[2]
READMES = [REPO / "README.md", *sorted((REPO / "videomamba").glob("*/README.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_snippets() -> list[tuple[str, str]]:
    snippets = []
    for readme in READMES:
        text = readme.read_text(encoding="utf-8")
        for match in PYTHON_BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 2
            snippets.append((f"{readme.relative_to(REPO)}:{line}", match.group(1)))
    return snippets


SNIPPETS = python_snippets()


def test_the_readmes_have_python_snippets():
    sources = {name.split(":")[0] for name, _ in SNIPPETS}
    assert {"README.md", "videomamba/image_sm/README.md"} <= sources


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory):
    """Released-name files for the sizes the snippets use, plus the snippets' own local files."""
    folder = tmp_path_factory.mktemp("checkpoints")
    work = tmp_path_factory.mktemp("work")
    for size, tag in (("tiny", "t16"), ("small", "s16")):
        state = timm.create_model(f"videomamba_{size}").state_dict()
        torch.save({"model": state}, folder / f"videomamba_{tag}_in1k_res224.pth")
        if size == "tiny":
            torch.save({"model": state}, work / "my.pth")
            torch.save(state, work / "any_checkpoint.pth")
    return folder, work


@pytest.mark.slow  # full-size models, as the READMEs build them
@pytest.mark.parametrize("where,code", SNIPPETS, ids=[name for name, _ in SNIPPETS])
def test_readme_snippet_runs_as_written(where, code, checkpoint_folder, monkeypatch):
    folder, work = checkpoint_folder
    monkeypatch.setenv("VIDEOMAMBA_CHECKPOINTS", str(folder))
    monkeypatch.chdir(work)
    with torch.no_grad():
        exec(compile(code, where, "exec"), {"__name__": "__readme__"})
