"""docs/scripts.md lists every flag of every script (and of each search.py subcommand) in its own section's
tables, so a flag cannot be added without being documented."""
from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_MD = (ROOT / "docs" / "scripts.md").read_text(encoding="utf-8")
PREPROCESSING = ("images_augment", "captions_augment", "captions_embed")


def _section(title: str, level: str = "## ") -> str:
    """The text of one heading's section, up to the next heading of the same level."""
    start = SCRIPTS_MD.index(f"\n{level}{title}")
    end = SCRIPTS_MD.find(f"\n{level}", start + 1)
    return SCRIPTS_MD[start:end if end > 0 else None]


def _table_rows(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


def _undocumented(parser: argparse.ArgumentParser, text: str) -> list[str]:
    rows = _table_rows(text)
    return [a.option_strings[-1] for a in parser._actions
            if a.option_strings and "--help" not in a.option_strings
            and not re.search(r"`" + re.escape(a.option_strings[-1]) + r"`", rows)]


@pytest.mark.parametrize("script", [*PREPROCESSING, "main", "evaluate"])
def test_every_flag_of_every_script_is_in_its_table(script):
    parser = importlib.import_module(script).get_args_parser()
    text = _section(f"{script}.py")
    if script in PREPROCESSING:
        text += _section("Flags every preprocessing script shares")
    assert _undocumented(parser, text) == []


@pytest.mark.parametrize("command", ["index", "query", "serve"])
def test_every_flag_of_every_search_command_is_in_its_table(command):
    import search

    sub = next(a for a in search.get_args_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert _undocumented(sub.choices[command], _section(f"search.py {command}", "### ")) == []


def test_the_check_sees_a_missing_flag():
    parser = argparse.ArgumentParser()
    parser.add_argument("--not-documented-anywhere")
    assert _undocumented(parser, _section("main.py")) == ["--not-documented-anywhere"]
