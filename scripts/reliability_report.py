"""Run the reliability suites and write docs/reliability.md (bad inputs, crashes, concurrency, security).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/reliability_report.py            # ~4 min on 2 cores
    .venv/bin/python scripts/reliability_report.py --fast                        # skip @slow (no kills)
    .venv/bin/python scripts/reliability_report.py --junit run.xml               # from an earlier run

1. Run pytest on the suites with ``--junitxml`` (legacy family, so ``record_property`` values land
   in the XML: each bad-input case records its ``kind``, each crash test its ``faults_injected``,
   ``faults_survived`` and ``kill_points``).
2. Read the XML: per suite, cases tried, passed, failed, expected failures (known bugs, with the
   fix in their reason), the kinds of input or fault covered, faults injected/survived, seconds.
3. Write the table, the kill points and the known bugs to docs/reliability.md.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = {  # test file -> (suite name, what it proves)
    "tests/bad_inputs/test_story_files.py": ("bad inputs: story files, reference images",
                                             "one sentence naming file:line field, exit 2, no traceback, nothing written"),
    "tests/bad_inputs/test_videos.py": ("bad inputs: videos, corpus folders",
                                        "bad folders refused in one sentence; bad videos rejected by name with a reason, "
                                        "the good ones ingested"),
    "tests/bad_inputs/test_config.py": ("bad inputs: settings, queries, output paths, depth weights",
                                        "one sentence naming the STORY_* setting, option, path or folder"),
    "tests/test_crash_safety.py": ("crash safety (SIGKILL)",
                                   "after kills at random points and a rerun: outputs identical to a clean run, "
                                   "no temp files"),
    "tests/test_concurrency.py": ("concurrency", "searches during reindexes; two processes writing the same artifacts"),
    "tests/test_security.py": ("security defaults", "127.0.0.1 binds, no pickle/eval/unsafe YAML, confined paths, "
                                                    "limits before decoders"),
}
# Kinds of the tests that do not record one (by test function name prefix).
KINDS = {
    "test_corpus_build_killed": "SIGKILL: render/ingest/index", "test_story_corpus_build_command": "SIGKILL: story CLI",
    "test_depth_extraction_killed": "SIGKILL: depth memos",
    "test_personalization_killed": "SIGKILL: personalization training", "test_rendering_killed": "SIGKILL: shot render",
    "test_index_interrupted": "interrupt: index commit",
    "test_searches_during": "threads: search vs reindex", "test_two_processes_writing": "2 processes: depth memos",
    "test_two_corpus_builds": "2 processes: corpus build", "test_server_commands": "server bind",
    "test_no_wildcard": "server bind", "test_dagster_home": "server bind", "test_no_pickle": "pickle/eval/YAML",
    "test_the_scanner": "pickle/eval/YAML", "test_assets_never_pickle": "pickle/eval/YAML",
    "test_pickled_checkpoints": "pickle/eval/YAML", "test_story_with_a_python_tag": "pickle/eval/YAML",
    "test_reference_images_outside": "path confinement", "test_a_video_over": "decode limits",
    "test_ingest_and_depth_check": "decode limits", "test_a_png_bomb": "decode limits",
    "test_subprocesses_get": "shell injection", "test_python_tag": "story", "test_error_message_keeps": "story",
    "test_story_named_like": "story", "test_query_with_markup": "query", "test_content_run": "video",
    "test_limits_run": "video limit", "test_named_pipe": "corpus", "test_depth_weights_shipped": "depth weights",
}


@dataclass
class Suite:
    name: str
    proves: str
    cases: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    xfailed: list = field(default_factory=list)  # (test, reason)
    kinds: dict = field(default_factory=lambda: defaultdict(int))
    injected: int = 0
    survived: int = 0
    seconds: float = 0.0
    kill_points: list = field(default_factory=list)  # (test, points)
    failures: list = field(default_factory=list)


def run_pytest(junit: Path, fast: bool) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=legacy",
           f"--junitxml={junit}", *SUITES]
    if fast:
        cmd += ["-m", "not slow"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def read(junit: Path) -> tuple[dict[str, Suite], float]:
    """Suites and the pytest session's wall time."""
    suites = {f: Suite(*v) for f, v in SUITES.items()}
    tree = ET.parse(junit)
    suite_node = tree.getroot() if tree.getroot().tag == "testsuite" else tree.getroot().find("testsuite")
    for case in tree.iter("testcase"):
        file = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        file = next((f for f in suites if f.endswith(file.removeprefix("tests/")) or file.endswith(f)), None)
        if file is None:
            continue
        s = suites[file]
        s.cases += 1
        s.seconds += float(case.get("time", 0))
        name = case.get("name", "")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        kind = props.get("kind") or next((k for prefix, k in KINDS.items() if name.startswith(prefix)), None)
        if kind:
            s.kinds[kind] += 1
        skipped = case.find("skipped")
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        if failure is not None:
            s.failed += 1
            s.failures.append((name, (failure.get("message") or "")[:200]))
        elif skipped is not None and skipped.get("type") == "pytest.xfail":
            s.xfailed.append((name, skipped.get("message", "").removeprefix("reason: ")))
        elif skipped is not None:
            s.skipped += 1
        else:
            s.passed += 1
        if "faults_injected" in props:
            s.injected += int(props["faults_injected"])
            s.survived += int(props.get("faults_survived", 0)) if failure is None else 0
        if props.get("kill_points"):
            s.kill_points.append((name, props["kill_points"]))
    return suites, float(suite_node.get("time", 0)) if suite_node is not None else 0.0


def markdown(suites: dict[str, Suite], seconds: float, fast: bool) -> str:
    total = lambda attr: sum(getattr(s, attr) for s in suites.values())  # noqa: E731
    lines = [
        "# Reliability: bad inputs, crashes, concurrency, security",
        "",
        "Written by `scripts/reliability_report.py` (it runs the suites below with pytest and reads the JUnit XML);"
        " rerun it to refresh. Machine: 2 CPU cores, `OMP_NUM_THREADS=1`" + (", slow tests skipped (`--fast`)" if fast else "")
        + f", {seconds:.0f} s for the pytest session.",
        "",
        "| suite | cases tried | passed | failed | known bugs (xfail) | kinds covered | faults injected / survived | seconds |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for f, s in suites.items():
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(s.kinds.items())) or "-"
        faults = f"{s.injected} / {s.survived}" if s.injected else "-"
        lines.append(f"| [{s.name}](../{f}) | {s.cases} | {s.passed} | {s.failed} | {len(s.xfailed)} | {kinds} | "
                     f"{faults} | {s.seconds:.0f} |")
    lines.append(f"| **total** | **{total('cases')}** | **{total('passed')}** | **{total('failed')}** | "
                 f"**{sum(len(s.xfailed) for s in suites.values())}** | | **{total('injected')} / {total('survived')}** | "
                 f"**{total('seconds'):.0f}** |")
    lines += ["", "What each suite proves:", ""]
    lines += [f"- **{s.name}**: {s.proves}." for s in suites.values()]
    kills = [(n, p) for s in suites.values() for n, p in s.kill_points]
    if kills:
        lines += ["", "## Where the kills landed", "",
                  "Each entry: the last progress marker the stage printed before SIGKILL, and the seeded delay after the "
                  "marker aimed at (`tests/test_crash_safety.py` explains the scheme; seeds are fixed, so a rerun kills at "
                  "the same points give or take scheduling).", ""]
        lines += [f"- `{n}`: {p}" for n, p in kills]
    known = [(n, r) for s in suites.values() for n, r in s.xfailed]
    if known:
        lines += ["", "## Known bugs (expected failures, each naming its fix; a fixed one turns its test red "
                  "(strict marker) or green, then drop the marker)", ""]
        lines += [f"- `{n}`: {r}" for n, r in known]
    failures = [(n, m) for s in suites.values() for n, m in s.failures]
    if failures:
        lines += ["", "## Failures in this run", ""] + [f"- `{n}`: {m}" for n, m in failures]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="skip the @slow tests (the SIGKILL chains)")
    parser.add_argument("--junit", type=Path, help="read this JUnit XML instead of running pytest")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    if args.junit:
        junit, status = args.junit, 0
    else:
        junit = Path(tempfile.mkdtemp()) / "reliability.xml"
        status = run_pytest(junit, args.fast)
    suites, seconds = read(junit)
    args.out.write_text(markdown(suites, seconds, args.fast))
    print(f"Wrote {args.out}: {sum(s.cases for s in suites.values())} cases, "
          f"{sum(s.failed for s in suites.values())} failed.")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
