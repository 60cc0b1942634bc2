"""Every subcommand's --help: help text on every flag, defaults shown, the common flags present."""
from __future__ import annotations

import pytest

from multiverse.cli import SUBCOMMANDS, build_parser

# engine/server.py's flags are rewritten on the `server` branch (FastAPI); its own help comes with that rewrite.
PENDING = {"serve"}


@pytest.mark.parametrize("name", [n for n in SUBCOMMANDS if n not in PENDING])
def test_every_flag_has_help(name):
    parser = build_parser(name)[1][name]
    assert [a.dest for a in parser._actions if not a.help] == []


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_common_flags_on_every_subcommand(name):
    text = build_parser(name)[1][name].format_help()
    assert "--threads THREADS" in text and "--debug" in text


def test_defaults_are_shown():
    text = " ".join(build_parser("generate")[1]["generate"].format_help().split())
    assert "--max-new-tokens MAX_NEW_TOKENS budget of sampled tokens over all branches (default: 512)" in text
    assert "0 decodes greedily (default: 0.0)" in text
    assert "(default: the tiny model shipped with the package)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    text = " ".join(build_parser("eval")[1]["eval"].format_help().split())
    assert "(default: 4096)" in text and "(default: the tiny model shipped with the package)" in text
