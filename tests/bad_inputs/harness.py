"""Running a bad-input case through the real CLI and judging what comes out."""

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from typer.testing import CliRunner

from story_pipeline.cli import app

STORY_EXE = Path(sys.executable).with_name("story")
ENV = {"COLUMNS": "200", "DAGSTER_HOME": None, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass(frozen=True)
class Case:
    """One bad input. ``build(folder)`` writes it under ``folder`` (a fresh temporary folder; the
    data root is ``folder / "data"``) and returns the CLI arguments; the one-sentence error must
    contain every string of ``words`` ("{folder}" stands for that folder)."""

    id: str
    kind: str  # what is bad: story | image | video | corpus | config | query
    build: Callable[[Path], list[str]]
    words: tuple[str, ...]
    env: dict = field(default_factory=dict)  # STORY_* settings of this case ("{folder}" as in words)
    accepted: bool = False  # accepting it is right: exit 0 and these words in the output

    def __str__(self) -> str:
        return self.id


def listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size (what a failed command must leave as it was), but
    Dagster's run log (``dagster_home``): a failed run is recorded there on purpose."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and not p.is_symlink() and "dagster_home" not in p.relative_to(folder).parts}


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def message(self) -> str:
        return " ".join(self.stderr.split())


def invoke(args: list[str], data_root: Path, env: dict | None = None) -> Outcome:
    """The CLI in-process (typer's CliRunner on story_pipeline.cli:app), with its own data root."""
    result = CliRunner().invoke(app, [str(a) for a in args],
                                env={**ENV, "STORY_DATA_ROOT": str(data_root), **(env or {})})
    exception = None if isinstance(result.exception, SystemExit) else result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr, exception)


def run_exe(args: list[str], data_root: Path, env: dict | None = None, timeout: float = 300) -> Outcome:
    """The installed ``story`` executable as a user runs it."""
    full = {**os.environ, **{k: v for k, v in ENV.items() if v is not None}, "OMP_NUM_THREADS": "1",
            "STORY_DATA_ROOT": str(data_root), **(env or {})}
    full.pop("DAGSTER_HOME", None)
    proc = subprocess.run([str(STORY_EXE), *map(str, args)], env=full, capture_output=True, text=True, timeout=timeout)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


SENTENCE_BREAK = re.compile(r"[.!?] +[A-Z][a-z]")  # ". Then": a second sentence


def assert_one_sentence(out: Outcome, words: tuple[str, ...]) -> str:
    """Exit code 2 (the CLI's user-error code), nothing but ``error: <one sentence>`` on stderr
    naming ``words``, no traceback anywhere."""
    assert out.exception is None, f"{type(out.exception).__name__}: {out.exception}"
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-2000:]
    assert out.exit_code == 2, (out.exit_code, out.stdout[-500:], out.stderr[-1500:])
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    message = lines[0].removeprefix("error: ")
    assert not SENTENCE_BREAK.search(message), message
    for w in words:
        assert w in message, f"{w!r} not in: {message}"
    return message


def check_case(case: Case, folder: Path, runner=invoke) -> Outcome:
    """Build the case, run it, judge it; a refused input leaves every file as it was."""
    args = case.build(folder)
    data = folder / "data"
    before = listing(folder)
    out = runner(args, data, {k: v.replace("{folder}", str(folder)) for k, v in case.env.items()})
    words = tuple(w.replace("{folder}", str(folder)) for w in case.words)
    if case.accepted:
        assert out.exception is None and out.exit_code == 0, (out.stdout[-1000:], out.stderr[-1500:])
        assert "Traceback" not in out.stdout + out.stderr
        for w in words:
            assert w in " ".join(out.stdout.split()), f"{w!r} not in: {out.stdout}"
    else:
        assert_one_sentence(out, words)
        assert listing(folder) == before  # nothing written, nothing half-written
    return out
