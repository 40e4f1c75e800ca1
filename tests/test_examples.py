"""examples/ shows real output: the rendered files are what pxeprov renders from the example
state. `UPDATE_EXAMPLES=1 pytest tests/test_examples.py` rewrites them after a template change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pxeprov import render, state
from pxeprov.boot import Decision, UefiChain
from pxeprov.render import Kind

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_state_round_trips() -> None:
    text = (EXAMPLES / "pxeprov.toml").read_text()
    assert state.dumps(state.loads(text)) == text


@pytest.mark.parametrize(
    ("chain", "folder"), [("ipxe", "rendered"), ("grub", "rendered-secureboot")]
)
def test_rendered_examples_are_current(chain: UefiChain, folder: str) -> None:
    example = state.loads((EXAMPLES / "pxeprov.toml").read_text())
    rendered = render.render(example, decision=Decision(chain))
    generated = [f for f in rendered if f.kind is Kind.GENERATED]
    assert generated
    for f in generated:
        assert f.content is not None
        target = EXAMPLES / folder / str(f.path).lstrip("/")
        if os.environ.get("UPDATE_EXAMPLES"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.content)
        assert target.read_bytes() == f.content, f"{target} is stale: see this module's docstring"
