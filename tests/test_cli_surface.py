"""One way to say things on the command line: defaults shown, one output flag, one --json,
global options anywhere, log levels checked."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mm_sim.cli import _parsers, build_parser, main
from mm_sim.commands import JSON_HELP

REPO = Path(__file__).resolve().parent.parent
SWITCHES = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._StoreConstAction,
    argparse._HelpAction,
    argparse._VersionAction,
)


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def _options(parser: argparse.ArgumentParser):
    for p in [parser, *_parsers(parser)]:
        for action in p._actions:
            if action.option_strings and not isinstance(action, SWITCHES):
                yield p, action


def test_every_option_help_shows_its_default(parser: argparse.ArgumentParser) -> None:
    missing = []
    for p, action in _options(parser):
        text = p._get_formatter()._get_help_string(action) % {"default": action.default}
        if "default" not in text.lower() and "(required)" not in text:
            missing.append(f"{p.prog} {action.option_strings[-1]}")
    assert not missing, missing


def test_every_command_formats_its_help(parser: argparse.ArgumentParser) -> None:
    """argparse %-formats every help text when it prints --help: a bare percent sign in one
    (``"1% of"``) made ``convert --help`` an internal error."""
    for p in [parser, *_parsers(parser)]:
        assert "usage:" in p.format_help(), p.prog


def test_soak_help_takes_its_defaults_from_the_run_settings(
    parser: argparse.ArgumentParser,
) -> None:
    from mm_sim.config import RunSettings

    soak = next(p for p in _parsers(parser) if p.prog.endswith(" soak"))
    text = soak.format_help()
    assert f"(default: {RunSettings.model_fields['feed'].default})" in " ".join(text.split())


def test_one_output_flag(parser: argparse.ArgumentParser) -> None:
    by_prog = {p.prog.split(" ", 1)[1]: p for p in _parsers(parser)}
    for name in ("soak", "sweep", "convert", "record", "export", "validate as2008"):
        flags = {s for a in by_prog[name]._actions for s in a.option_strings}
        assert {"-o", "--out"} <= flags, name
    old = parser.parse_args(["soak", "--artifacts", "A"])
    new = parser.parse_args(["soak", "-o", "A"])
    assert old.artifacts == new.artifacts == "A"


def test_json_means_one_thing(parser: argparse.ArgumentParser) -> None:
    helps = {
        p.prog: a.help
        for p in [parser, *_parsers(parser)]
        for a in p._actions
        if "--json" in a.option_strings
    }
    assert len(helps) >= 5
    assert all(h is not None and h.startswith(JSON_HELP) for h in helps.values()), helps


def test_global_options_after_the_subcommand(
    parser: argparse.ArgumentParser, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert parser.parse_args(["report", "R", "--log-level", "debug"]).log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "error", "report", "R"]).log_level == "ERROR"
    assert parser.parse_args(["report", "R", "--log-level", "warn"]).log_level == "WARNING"
    assert parser.parse_args(["report", "R", "--no-log-json"]).log_json is False
    assert parser.parse_args(["report", "R"]).log_json is None
    assert main(["report", str(tmp_path / "nowhere"), "--log-level", "warning"]) == 2
    assert "nowhere: run directory not found" in capsys.readouterr().err


def test_log_level_is_checked(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "R", "--log-level", "loud"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'loud' is not a log level: expected one of DEBUG, INFO, WARNING, ERROR" in err


def test_readme_lists_the_global_options() -> None:
    readme = (REPO / "README.md").read_text()
    for flag in ("--log-level", "--log-json", "--version"):
        assert f"`{flag}" in readme, flag


def test_a_command_loads_only_its_own_module() -> None:
    """``mm_sim soak`` registers the soak alone: the other commands' stacks (the sweep's Dask
    and report, the fake exchange's HTTP server) are not imported for it; a misspelt command
    still gets the full list to choose from."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mm_sim.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('mm_sim.commands.sweep', 'mm_sim.commands.fake_exchange',"
        " 'mm_sim.commands.soak', 'aiohttp') if m in sys.modules))\n"
    )
    run = [sys.executable, "-c", code]
    soak = subprocess.run([*run, "soak", "--help"], capture_output=True, text=True, check=True)
    assert soak.stdout.strip().splitlines()[-1] == "['mm_sim.commands.soak']"
    fake = subprocess.run([*run, "fake-exchange", "--help"], capture_output=True, text=True)
    assert "--msg-rate" in fake.stdout and "mm_sim.commands.sweep" not in fake.stdout
    typo = subprocess.run([*run, "sok"], capture_output=True, text=True)
    assert "invalid choice: 'sok'" in typo.stderr and "'fake-exchange'" in typo.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "--from", "binance", "in.gz", "-o", ""],
        ["export", "RUN", "-o", " "],
        ["report", ""],
        ["validate", "as2008", "--out", ""],
    ],
)
def test_an_empty_path_is_refused_by_name(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    """An empty path (an unset shell variable) was the current folder, or an internal error
    ("PosixPath('.') has an empty name") deep in the command."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "an empty path: expected a file or folder name" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["inspect", ""], ["soak", "--feed", " "]])
def test_an_empty_feed_name_is_refused_by_name(
    command: list[str], capsys: pytest.CaptureFixture
) -> None:
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "an empty feed name: expected a feed .npy" in err and "synthetic-short" in err


def test_a_reader_that_goes_away_gets_no_error_message() -> None:
    """``mm_sim config docs | head -1``: the command's output is cut, not an error. The read
    end is closed before the command writes, so its first write fails, every time."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "mm_sim", "config", "docs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Broken pipe" not in err and "error" not in err.lower(), err


@pytest.mark.parametrize("value", ["-1e3", "-1E+3", "-2.5", "-1.", "-.5e-2", "-7"])
def test_a_negative_number_in_exponent_form_is_a_value(
    parser: argparse.ArgumentParser, value: str
) -> None:
    """argparse read "--clock -1e3" as a missing value ("expected one argument") while
    "--clock -2.5" worked: its negative-number rule has no exponent."""
    assert parser.parse_args(["soak", "--clock", value]).clock == value
    fx = parser.parse_args(["fake-exchange", "--clock-offset-ms", value])
    assert fx.clock_offset_ms == float(value)
