"""The `einfhe` command: explain prints a plan, bad input is one line on stderr, serve hands over its options."""

import pytest

from einfhe.cli import main


def test_explain_prints_the_plan(capsys):
    assert main(["explain", "ij,j->i", "p:3x4", "c:4", "--slots", "16"]) == 0
    out = capsys.readouterr().out
    assert "einsum ij,j->i" in out and "rotations" in out


def test_explain_reports_a_bad_spec_in_one_line(capsys):
    assert main(["explain", "ij,jk->ik", "c:4x6", "p:7x3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("einfhe:") and "size" in err and "\n" not in err


def test_serve_passes_help_to_the_service(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    assert "--executor" in capsys.readouterr().out
