"""Bad videos through `story corpus add`: the command refuses a bad folder in one sentence; inside a
good folder, each bad video is rejected with a reason naming it while the good ones are ingested.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/bad_inputs/test_videos.py

Two real runs are shared by the rejection cases (an ingest run costs seconds, a case costs a file):
one of the installed command over a folder of every bad video beside good ones, one in-process
with small STORY_LIMITS__* settings where each video breaks exactly one decode limit.
"""

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from story_pipeline.corpus.ingest import read_manifest

from .builders import (audio_only, caption, good_video, header_claims_more_frames, matroska_named_mp4, png_named_mp4,
                       truncated_video, variable_frame_rate)
from .harness import Case, check_case, invoke, run_exe


@dataclass(frozen=True)
class VideoCase:
    """A file in a folder given to `story corpus add`: ``build(folder)`` writes it and returns its
    name; ``words`` must be in its rejection (or, ``accepted``, it must become a clip)."""

    id: str
    build: Callable[[Path], str]
    words: tuple[str, ...]
    accepted: bool = False

    def __str__(self) -> str:
        return self.id


def captioned(make, name: str, text: str | bytes = "a test clip of a cat", shown: str | None = None):
    """Builder: the video ``name`` made by ``make`` and its caption; returns the file the message names."""
    def build(folder: Path) -> str:
        caption(make(folder / name), text)
        return shown or name
    return build


def zero_length(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def text_named_mp4(path: Path) -> Path:
    path.write_text("this is a caption, not a video\n" * 20)
    return path


def symlink_loop(folder: Path) -> str:
    (folder / "loop_a.mp4").symlink_to("loop_b.mp4")
    (folder / "loop_b.mp4").symlink_to("loop_a.mp4")
    caption(folder / "loop_a.mp4", "a loop")
    caption(folder / "loop_b.mp4", "a loop")
    return "loop_a.mp4"


def symlink_out(folder: Path) -> str:
    outside = good_video(folder.parent / "outside" / "secret.mp4")
    (folder / "secret.mp4").symlink_to(outside)
    caption(folder / "secret.mp4", "a secret clip")
    return "secret.mp4"


def uncaptioned(folder: Path) -> str:
    good_video(folder / "uncaptioned.mp4", seed=4)
    return "uncaptioned.mp4"


def manifest_rows(*rows) -> Callable[[Path], Path]:
    """A manifest.csv in ``listed/`` with the given (id, caption, path) rows."""
    def write(folder: Path) -> Path:
        (folder / "listed").mkdir(exist_ok=True)
        with open(folder / "listed" / "manifest.csv", "a", newline="") as f:
            w = csv.writer(f)
            if f.tell() == 0:
                w.writerow(["id", "caption", "path"])
            w.writerows(rows)
        return folder / "listed" / "manifest.csv"
    return write


def manifest_traversal(folder: Path) -> str:
    manifest_rows(("escape", "a way out", "../../../../etc/passwd"))(folder)
    return "passwd"


def manifest_nul_path(folder: Path) -> str:
    manifest_rows(("nul", "a NUL in the path", "clip\x00.mp4"))(folder)
    return "manifest.csv"


def broken_parquet(folder: Path) -> str:
    (folder / "broken").mkdir()
    (folder / "broken" / "manifest.parquet").write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    return "manifest.parquet"


CONTENT_CASES = [
    VideoCase("zero-length", captioned(zero_length, "zero.mp4"), ("empty (0 bytes)",)),
    VideoCase("truncated", captioned(truncated_video, "truncated.mp4"), ("cannot read the container header", "truncated")),
    VideoCase("header-claims-more-frames", captioned(header_claims_more_frames, "short_data.mp4"), ("truncated",)),
    VideoCase("png-named-mp4", captioned(png_named_mp4, "picture.mp4"), ("corrupt",)),
    VideoCase("text-named-mp4", captioned(text_named_mp4, "notes.mp4"), ("is not a video file",)),
    VideoCase("audio-only", captioned(audio_only, "song.mp4"), ("has no video stream",)),
    VideoCase("symlink-loop", symlink_loop, ("symlink loop",)),
    VideoCase("symlink-out-of-corpus", symlink_out, ("outside the corpus folder",)),
    VideoCase("caption-latin1", captioned(good_video, "latin.mp4", "un caf\xe9".encode("latin-1"), shown="latin.txt"),
              ("caption of 'mine__latin' is not valid UTF-8",)),
    VideoCase("no-caption", uncaptioned, ("has no caption", "uncaptioned.txt")),
    VideoCase("manifest-path-traversal", manifest_traversal, ("../../../../etc/passwd", "outside the corpus folder")),
    VideoCase("manifest-nul-in-path", manifest_nul_path, ("without NUL bytes",)),
    VideoCase("manifest-parquet-garbage", broken_parquet, ("is unusable",)),
    # accepting is right: odd but real videos become clips
    VideoCase("variable-frame-rate", captioned(variable_frame_rate, "vfr.mp4"), ("vfr",), accepted=True),
    VideoCase("matroska-named-mp4", captioned(matroska_named_mp4, "mkv.mp4"), ("mkv",), accepted=True),
    VideoCase("caption-rtl-zero-width", captioned(good_video, "rtl.mp4", "a cat \u202ejumps\u200b high"), ("rtl",),
              accepted=True),
]
GOOD = ("good_a", "good_b")  # clips that must be ingested beside the rejections


def build_folder(folder: Path, cases) -> dict[str, str]:
    folder.mkdir(parents=True)
    for k, name in enumerate(GOOD):
        caption(good_video(folder / f"{name}.mp4", seed=10 + k), f"a good clip number {k}")
    return {c.id: c.build(folder) for c in cases}


@pytest.fixture(scope="module")
def content_run(tmp_path_factory):
    """The installed command over a folder of every bad video beside two good ones."""
    root = tmp_path_factory.mktemp("videos")
    names = build_folder(root / "incoming", CONTENT_CASES)
    out = run_exe(["corpus", "add", root / "incoming", "--name", "mine"], root / "data")
    return out, root / "data", names


def clips_of(data: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in read_manifest(data / "artifacts" / "clip_corpus" / "clips.parquet").to_pylist()}


def rejection_lines(stderr: str) -> list[str]:
    return [line.removeprefix("rejected: ") for line in stderr.splitlines() if line.startswith("rejected: ")]


def test_content_run_accepts_the_folder_and_reports(content_run):
    out, data, _ = content_run
    assert out.exit_code == 0 and "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    rejected = sum(not c.accepted for c in CONTENT_CASES) + 1  # loop_b.mp4 is the loop's other half
    summary = " ".join(out.stdout.split())
    assert f"Corpus: {len(GOOD) + 3} clips" in summary and f"{rejected} rejected" in summary, summary
    assert len(rejection_lines(out.stderr)) == rejected, out.stderr
    assert set(clips_of(data)) == {f"mine__{n}" for n in GOOD + ("vfr", "mkv", "rtl")}
    assert not [p for p in (data / "corpus").iterdir() if p.name.startswith(".")]  # no half-copied folder


@pytest.mark.parametrize("case", CONTENT_CASES, ids=str)
def test_bad_video_is_rejected_by_name_with_a_reason(case, content_run, record_property):
    record_property("kind", "video")
    out, data, names = content_run
    name = names[case.id]
    if case.accepted:
        clip = clips_of(data)[f"mine__{Path(name).stem}"]
        assert clip["num_frames"] >= 8 and clip["fps"] > 0 and clip["width"] == 128
        assert abs(clip["duration_s"] - clip["num_frames"] / clip["fps"]) < 1e-6
        assert not [line for line in rejection_lines(out.stderr) if name in line]
        return
    lines = [line for line in rejection_lines(out.stderr) if name in line and all(w in line for w in case.words)]
    assert len(lines) == 1, (case.words, rejection_lines(out.stderr))
    assert lines[0].endswith(".") and lines[0].count("\n") == 0


# --- limits: each video breaks exactly one, set small through STORY_LIMITS__* -----------------------
LIMITS = {"STORY_LIMITS__MAX_FILE_BYTES": "150000", "STORY_LIMITS__MAX_WIDTH": "160", "STORY_LIMITS__MAX_HEIGHT": "160",
          "STORY_LIMITS__MAX_DURATION_S": "3.5", "STORY_LIMITS__MAX_FRAMES": "50"}


def noisy(path: Path) -> Path:
    """Random pixels do not compress: 24 frames at 128 px are ~1 MB, over the 150 kB limit."""
    import numpy as np

    from story_pipeline.video_io import write_mp4

    return write_mp4(path, np.random.default_rng(0).integers(0, 255, (24, 128, 128, 3), dtype=np.uint8), 12)


LIMIT_CASES = [
    VideoCase("too-large-file", captioned(noisy, "big.mp4"), ("file size", "above the limit 0.1 MiB")),
    VideoCase("too-wide", captioned(lambda p: good_video(p, size=192), "wide.mp4"), ("resolution 192x192", "160x160")),
    VideoCase("too-long", captioned(lambda p: good_video(p, num_frames=48), "long.mp4"), ("duration 4.0 s is above the limit 3.5 s",)),
    VideoCase("too-many-frames", captioned(lambda p: good_video(p, num_frames=60, fps=30), "dense.mp4"),
              ("60 frames is above the limit 50",)),
]


@pytest.fixture(scope="module")
def limits_run(tmp_path_factory):
    """`story corpus add` in-process (CliRunner) with small decode limits; the ingest's rejection
    log lines (what the command prints on stderr) are collected."""
    root = tmp_path_factory.mktemp("limits")
    names = build_folder(root / "incoming", LIMIT_CASES)
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("story_pipeline.corpus.ingest")
    logger.addHandler(handler)
    try:
        out = invoke(["corpus", "add", root / "incoming", "--name", "mine"], root / "data", LIMITS)
    finally:
        logger.removeHandler(handler)
    return out, root / "data", names, [r.removeprefix("rejected: ") for r in records if r.startswith("rejected: ")]


def test_limits_run_ingests_the_good_clips(limits_run):
    out, data, _, rejected = limits_run
    assert out.exception is None and out.exit_code == 0, out.stderr[-3000:]
    assert f"{len(LIMIT_CASES)} rejected" in " ".join(out.stdout.split())
    assert set(clips_of(data)) == {f"mine__{n}" for n in GOOD} and len(rejected) == len(LIMIT_CASES)


@pytest.mark.parametrize("case", LIMIT_CASES, ids=str)
def test_video_over_a_limit_is_rejected_before_decoding(case, limits_run, record_property):
    record_property("kind", "video limit")
    _, _, names, rejected = limits_run
    lines = [line for line in rejected if names[case.id] in line]
    assert len(lines) == 1 and all(w in lines[0] for w in case.words), (case.words, rejected)


# --- the command refuses the folder itself: one sentence, nothing copied ---------------------------
def folder(make=None):
    def build(root: Path) -> list[str]:
        (root / "src").mkdir()
        if make:
            make(root / "src")
        return ["corpus", "add", root / "src", "--no-reindex"]
    return build


def named(name: str):
    def build(root: Path) -> list[str]:
        return folder()(root) + ["--name", name]
    return build


def existing(root: Path) -> list[str]:
    (root / "data" / "corpus" / "src").mkdir(parents=True)
    (root / "data" / "corpus" / "src" / "keep.txt").write_text("already here")
    return folder()(root)


def with_fifo(src: Path) -> None:
    caption(good_video(src / "good.mp4"), "a good clip")
    os.mkfifo(src / "pipe.mp4")
    caption(src / "pipe.mp4", "a named pipe")


FOLDER_CASES = [
    Case("add-missing-folder", "corpus", lambda r: ["corpus", "add", r / "nope"], ("{folder}/nope", "is not a folder")),
    Case("add-a-file", "corpus", lambda r: ["corpus", "add", "/etc/passwd"], ("/etc/passwd", "is not a folder")),
    Case("add-name-traversal", "corpus", named("../../evil"), ("'../../evil'", "--name")),
    Case("add-name-absolute", "corpus", named("/tmp/evil"), ("'/tmp/evil'",)),
    Case("add-name-hidden", "corpus", named(".hidden"), ("'.hidden'",)),
    Case("add-name-toyworld", "corpus", named("toyworld"), ("'toyworld'",)),
    Case("add-existing-name", "corpus", existing, ("{folder}/data/corpus/src", "already exists")),
    Case("add-folder-with-named-pipe", "corpus", folder(with_fifo), ("pipe.mp4", "named pipe")),
]


@pytest.mark.parametrize("case", FOLDER_CASES, ids=str)
def test_bad_folder_for_corpus_add(case, tmp_path, record_property):
    record_property("kind", case.kind)
    check_case(case, tmp_path)
    corpus = tmp_path / "data" / "corpus"
    assert not corpus.exists() or not [p for p in corpus.iterdir() if p.name.startswith(".")]


def test_named_pipe_through_the_installed_command(tmp_path):
    case = next(c for c in FOLDER_CASES if c.id == "add-folder-with-named-pipe")
    check_case(case, tmp_path, runner=run_exe)
