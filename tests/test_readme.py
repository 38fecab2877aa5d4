"""The README's commands are real: every `mer-...` line in its code blocks parses with that command's own parser
(options and arguments as the command takes them), and its test command is the one `.ci/run` runs."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from mer_cli import analyze, live, subscribe

    return {"mer-live": live.build_parser, "mer-analyze": analyze.build_parser, "mer-subscribe": subscribe.build_parser}


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.split("#")[0].strip()
                if part.startswith("mer-"):
                    lines.append(part)
    return lines


def test_the_readme_shows_the_three_ways_to_use_it() -> None:
    names = {shlex.split(c)[0] for c in _commands()}
    assert {"mer-live", "mer-analyze", "mer-subscribe"} <= names


@pytest.mark.parametrize("command", _commands())
def test_a_readme_command_parses_with_its_program(command: str) -> None:
    name, *argv = shlex.split(command)
    parser = _parsers()[name]()
    args = parser.parse_args(argv)  # SystemExit(2) on an unknown option or a bad value
    assert args is not None


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    run = ci.strip().splitlines()[-1]  # the README's test command, after the install
    assert run in readme and "pip install torch==2.13.0" in readme
