"""The command line: --help everywhere, and every subcommand listed in --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import COMMANDS, build_parser, main


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: edgesteer {name}")
    assert len(out.splitlines()) > 3


def test_every_command_module_registers_a_runner() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)  # type: ignore[arg-type]
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        assert callable(p.get_default("run")), name


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "edge", "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "usage: edgesteer" in out.stdout


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


EXAMPLE = str(Path(__file__).resolve().parent.parent / "deploy/examples/hk-cluster.yaml")


@pytest.mark.parametrize("form", [[EXAMPLE], ["--config", EXAMPLE]])
def test_config_given_positionally_or_as_option(form: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["anycast", *form, "--json"]) == 0
    assert capsys.readouterr().out.strip().startswith(("{", "["))


def test_config_missing_or_contradictory_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "edgesteer run: give the config file (CONFIG or --config FILE)" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["apply", EXAMPLE, "--config", "other.yaml"])
    assert exc.value.code == 2
    assert "differ" in capsys.readouterr().err
