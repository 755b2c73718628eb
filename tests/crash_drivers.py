"""Subprocess drivers for the crash-safety and concurrency tests (not a test module).

    python tests/crash_drivers.py corpus DATA_ROOT N_CLIPS           # ingest + index, no Dagster
    python tests/crash_drivers.py depth CLIPS_DIR OUT_DIR NET_DIR      # shot depth memo per clip
    python tests/crash_drivers.py serve corpus                         # fork server (see below)
    python tests/crash_drivers.py serve depth CLIPS_DIR NET_DIR

``corpus`` is what the ``clip_corpus`` and ``clip_index`` assets do (the same library calls,
without Dagster). ``depth`` is the ``shot_depth`` stage: for every ``*.mp4`` under CLIPS_DIR
(sorted), the shot's motion structure through ``shots.shot_depth_cached`` into OUT_DIR
(safetensors + preview GIF), memoised like a story run. Both print ``phase ...`` markers as they
go and ``done`` at the end.

``serve`` imports the stage and loads its models once (MiniLM, the depth net: ~7 s), prints
``ready``, then for every ``run ARGS`` line on stdin forks a child in a new session that prints
``child PID``, does the work with ARGS and exits; the server then prints ``exit CODE`` (negative:
killed by that signal). Tests SIGKILL the child's process group (ffmpeg included) a seeded random
delay after a seeded choice of marker, so a kill costs the work it interrupts, not an import.
"""

import os
import shlex
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEPTH_FRAMES = 16  # the stories' default shot length
DEPTH_SIZE = (64, 64)  # (H, W): the toy models' resolution


def phase(name: str) -> None:
    """A marker the tests wait for before they start a kill's random delay."""
    print(f"phase {name}", flush=True)


# --- corpus: render + ingest + index ----------------------------------------------------------------
def corpus_setup() -> None:
    from story_pipeline import corpus, index, ingest  # noqa: F401  (imported once, before any fork)
    from story_pipeline.text_encoder import get_text_encoder

    get_text_encoder()  # loaded before the index marker, so a kill after it lands in the LanceDB writes


def corpus_work(_, data_root: str, n_clips: str) -> None:
    from story_pipeline.config import Settings
    from story_pipeline.corpus import build_clip_corpus
    from story_pipeline.index import ClipIndex
    from story_pipeline.ingest import read_manifest

    settings = Settings(data_root=Path(data_root))
    build = build_clip_corpus(settings, int(n_clips), 0, progress=lambda stage, done, total: phase(f"{stage} {done}"))
    index = ClipIndex(str(settings.lancedb_dir), ann_threshold=settings.ann_threshold)
    phase("index")
    index.upsert(read_manifest(build.manifest_path))


# --- depth: the shot_depth stage ---------------------------------------------------------------------
def depth_retrievals(clips_dir: str):
    """One ShotRetrieval per clip file, as retrieval would hand it to the depth stage."""
    import decord

    from story_pipeline.shots import ShotRetrieval

    out = []
    for path in sorted(Path(clips_dir).glob("*.mp4")):
        n = len(decord.VideoReader(str(path)))
        chosen = {"clip_id": path.stem, "path": str(path), "start_frame": 0, "end_frame": n, "fps": 12.0,
                  "score": 1.0, "caption": "", "duration_s": n / 12.0}
        out.append(ShotRetrieval("crash", path.stem, "", 1.0, [chosen], chosen))
    return out


def depth_setup(clips_dir: str, net_dir: str):
    import torch

    from story_pipeline.depth import load_estimator

    torch.set_num_threads(1)
    return load_estimator("toyworld", net_dir), depth_retrievals(clips_dir)


def depth_work(state, out_dir: str) -> None:
    from story_pipeline.shots import shot_depth_cached

    estimator, retrievals = state
    for r in retrievals:
        phase(f"clip {r.shot_id}")
        shot_depth_cached(r, DEPTH_FRAMES, DEPTH_SIZE, estimator, Path(out_dir))


# --- entry points -------------------------------------------------------------------------------------
def serve(stage: str, *setup_args) -> None:
    setup, work = {"corpus": (corpus_setup, corpus_work), "depth": (depth_setup, depth_work)}[stage]
    state = setup(*setup_args)
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = shlex.split(line)
        if command == "quit":
            break
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: its own session, so a kill of its group also ends ffmpeg
            code = 0
            try:
                os.setsid()
                print(f"child {os.getpid()}", flush=True)
                work(state, *args)
                print("done", flush=True)
            except BaseException:  # noqa: BLE001 - reported to the test through the exit code
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "serve":
        serve(*args)
    elif command == "corpus":
        corpus_setup()
        corpus_work(None, *args)
        print("done", flush=True)
    elif command == "depth":
        clips_dir, out_dir, net_dir = args
        depth_work(depth_setup(clips_dir, net_dir), out_dir)
        print("done", flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}")
