"""The commands printed in README.md and saved_models/ run as printed.

Commands that train (``all_tf.train``, ``all-tf protocol``, ...) take an hour each, and
``scripts/released_oof.py`` needs the full dataset, so they are parsed by their Click command
(every option and value checked) instead of run; every other command runs in a fresh working directory, in the order printed, with ``<path to all4>``
replaced by the shipped sample.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "all_tf" / "sample_data"
PLACEHOLDERS = {"<path to all4>": str(SAMPLE / "all4"), "<path to segwbc>": str(SAMPLE / "segwbc"),
                "<your labelled batch>": str(SAMPLE / "all4")}
PARSE_ONLY = {"all_tf.train", "all_tf.calibrate", "all-tf train", "all-tf calibrate",
              "all-tf protocol", "all-tf rejection",
              "all-tf release", "all-tf audit", "all-tf colour-spaces",
              "scripts/released_oof.py"}  # scores a release on its split: the full dataset
DOCS = [REPO / "README.md", REPO / "saved_models" / "README.md",
        *sorted((REPO / "saved_models").glob("*/MODEL_CARD.md"))]


def commands(path: Path) -> list[list[str]]:
    """``python ...`` and ``all-tf ...`` commands of the bash blocks of a Markdown file, as
    argument lists (``all-tf`` commands start with ``"all-tf"``)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(("python ", "all-tf ")):
                for key, value in PLACEHOLDERS.items():
                    line = line.replace(key, shlex.quote(value))
                args = shlex.split(line)
                out.append(args if args[0] == "all-tf" else args[1:])
    return out


def _target(args: list[str]) -> str:
    if args[0] == "all-tf":
        return f"all-tf {args[1]}"
    return args[1] if args[0] == "-m" else args[0]


def _absolute(args: list[str], cwd: Path) -> list[str]:
    """Repository paths made absolute (the command runs elsewhere); others left as printed."""
    out = []
    for a in args:
        if not a.startswith("-") and not (cwd / a).exists() and (REPO / a).exists():
            a = str(REPO / a)
        out.append(a)
    return out


def _click_command(target: str):
    if target.endswith(".py"):  # a script: its Click command, without running it
        from tests.helpers import script_command

        return script_command(Path(target).stem)
    if target.startswith("all-tf "):
        from all_tf.cli.main import COMMANDS

        return importlib.import_module(COMMANDS[target.split()[1]][0]).main
    return importlib.import_module(target).main


def _cases():
    for doc in DOCS:
        cmds = commands(doc)
        if cmds:
            yield pytest.param(doc, cmds, id=str(doc.relative_to(REPO)))


def test_the_docs_print_commands():
    assert commands(REPO / "README.md"), "README.md has no commands in bash blocks"


@pytest.mark.slow
@pytest.mark.parametrize("doc, cmds", list(_cases()))
def test_commands_run_as_printed(doc, cmds, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for args in cmds:
        target = _target(args)
        args = _absolute(args, tmp_path)
        rest = args[2:] if args[0] in ("-m", "all-tf") else args[1:]
        if target in PARSE_ONLY:
            for a in rest:  # outputs of earlier (not run) commands: an empty folder stands in
                if re.match(r"^(runs|results)/", a):
                    (tmp_path / a).mkdir(parents=True, exist_ok=True)
            _click_command(target).make_context(target, list(rest))
            continue
        if args[0] == "all-tf":
            args = ["-m", "all_tf.cli.main", *args[1:]]
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (f"{doc.name}: python {shlex.join(args)}\n"
                                      f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
