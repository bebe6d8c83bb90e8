"""``all-tf``: every command is listed, has --help, and the ``python -m`` aliases are the same."""

import importlib

import pytest
from click.testing import CliRunner

from all_tf.cli.main import COMMANDS, main


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
    assert set(COMMANDS) >= {"train", "predict", "export", "protocol", "audit", "figures",
                             "duplicates", "colour-spaces"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_has_help_and_one_output_flag(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    if name != "calibrate":  # writes into the run directory it is given
        assert "-o, --output" in result.output, name


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["trian"])
    assert result.exit_code == 2 and "trian" in result.output


@pytest.mark.parametrize("alias", ["train", "predict", "calibrate", "demo", "export"])
def test_python_m_aliases_are_the_commands(alias):
    module = importlib.import_module(f"all_tf.{alias}" if alias != "export"
                                     else "all_tf.export.__main__")
    assert module.main is importlib.import_module(COMMANDS[alias][0]).main


def test_duplicates_takes_the_dataset_as_data_dir_like_the_other_commands():
    from pathlib import Path

    sample = str(Path(__file__).resolve().parents[1] / "all_tf" / "sample_data" / "all4")
    by_option = CliRunner().invoke(main, ["duplicates", "--data-dir", sample])
    assert by_option.exit_code == 0, by_option.output
    assert by_option.output.startswith("48 images searched")
    by_argument = CliRunner().invoke(main, ["duplicates", sample])
    assert by_argument.exit_code == 0 and by_argument.output.startswith("48 images searched")
    both = CliRunner().invoke(main, ["duplicates", "--data-dir", sample, sample])
    assert both.exit_code == 2 and "give the dataset once" in both.output
    missing = CliRunner().invoke(main, ["duplicates", "--data-dir", "no/such/dir"])
    assert missing.exit_code == 2 and "no/such/dir: no such folder" in missing.output


def test_a_flag_means_the_same_in_every_command(monkeypatch):
    """One name, one kind of value: e.g. --threads is one thread count wherever it appears
    (timings take --timing-threads)."""
    from pathlib import Path

    import click

    from tests.helpers import script_command

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    monkeypatch.syspath_prepend(str(scripts))  # as when run: scripts import each other
    commands = {name: importlib.import_module(module).main
                for name, (module, *_) in COMMANDS.items()}
    commands.update({f"scripts/{p.name}": script_command(p.stem)
                     for p in sorted(scripts.glob("*.py"))})
    seen: dict[str, tuple] = {}
    for name, command in commands.items():
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            # a path and a string are both text; an int range is an int
            base = next((t.__name__ for t in (click.types.IntParamType, click.types.FloatParamType)
                         if isinstance(param.type, t)), type(param.type).__name__)
            base = "text" if base in ("Path", "StringParamType") else base
            choices = tuple(getattr(param.type, "choices", ()))
            kind = (param.multiple, param.is_flag, base, choices)
            for flag in param.opts + param.secondary_opts:
                # figures draws several runs; each --run-dir is still one run
                if flag.startswith("--") and flag not in ("--help", "--run-dir"):
                    where, before = seen.setdefault(flag, (name, kind))
                    assert before == kind, f"{flag}: {kind} in {name}, {before} in {where}"
