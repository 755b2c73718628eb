"""Subprocess drivers for the crash-safety and concurrency tests (not a test module).

    python tests/crash_drivers.py corpus DATA_ROOT N_CLIPS           # ingest + index, no Dagster
    python tests/crash_drivers.py depth CLIPS_DIR OUT_DIR NET_DIR      # shot depth memo per clip
    python tests/crash_drivers.py upserts DIR ROUNDS                   # index writers started together
    python tests/crash_drivers.py serve corpus                         # fork server (see below)
    python tests/crash_drivers.py serve depth CLIPS_DIR NET_DIR
    python tests/crash_drivers.py serve personalize STORY_YAML     # then: run OUT_DIR
    python tests/crash_drivers.py serve render STORY_YAML          # then: run DEPTH_PATH OUT_DIR

``corpus`` is what the ``clip_corpus`` and ``clip_index`` assets do (the same library calls,
without Dagster). ``depth`` is the ``shot_depth`` stage: for every ``*.mp4`` under CLIPS_DIR
(sorted), the shot's motion structure through ``shots.shot_depth_cached`` into OUT_DIR
(safetensors + preview GIF), memoised like a story run. Both print ``phase ...`` markers as they
go and ``done`` at the end. ``personalize`` is the ``character_timeinv`` stage (the story's first
character, small settings, a checkpoint every 4 steps) and ``render`` the ``rendered_shots`` stage (the
story's first shot, 6 sampler steps), both on the shipped ToyWorld video model, one thread.
``upserts`` loads MiniLM, prints ``ready``, then for each round r waits for the file DIR/go_r and
upserts the same 12 ToyWorld clips into the index DIR/db_r at once (the test starts several of
these: writers that start within a millisecond of each other), printing ``round r``.

``serve`` imports the stage and loads its models once (MiniLM, the depth net: ~7 s), prints
``ready``, then for every ``run ARGS`` line on stdin forks a child in a new session that prints
``child PID``, does the work with ARGS and exits; the server then prints ``exit CODE`` (negative:
killed by that signal). A child still working after ``HANG_SECONDS`` writes every thread's stack to
stderr (the test's log): a fork can inherit a lock another thread held, and a hang must say where it
stuck (the test then kills the child and retries the attempt once). Tests SIGKILL the child's process group (ffmpeg included) a seeded random
delay after a seeded choice of marker, so a kill costs the work it interrupts, not an import.
"""

import faulthandler
import os
import shlex
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HANG_SECONDS = float(os.environ.get("STORY_TEST_HANG_SECONDS", 150))  # far above any attempt's work (the slowest, a corpus build, takes ~15 s)
DEPTH_FRAMES = 16  # the stories' default shot length
DEPTH_SIZE = (64, 64)  # (H, W): the toy models' resolution


def phase(name: str) -> None:
    """A marker the tests wait for before they start a kill's random delay."""
    print(f"phase {name}", flush=True)


# --- corpus: render + ingest + index ----------------------------------------------------------------
def corpus_setup() -> None:
    from story_pipeline.corpus import build, index, ingest  # noqa: F401  (imported once, before any fork)
    from story_pipeline.models.text_encoder import get_text_encoder

    get_text_encoder()  # loaded before the index marker, so a kill after it lands in the LanceDB writes


def corpus_work(_, data_root: str, n_clips: str) -> None:
    from story_pipeline.config import Settings
    from story_pipeline.corpus.build import build_clip_corpus
    from story_pipeline.corpus.index import ClipIndex
    from story_pipeline.corpus.ingest import read_manifest

    settings = Settings(data_root=Path(data_root))
    build = build_clip_corpus(settings, int(n_clips), 0, progress=lambda stage, done, total: phase(f"{stage} {done}"))
    index = ClipIndex(str(settings.lancedb_dir), ann_threshold=settings.ann_threshold)
    phase("index")
    index.upsert(read_manifest(build.manifest_path))


def upserts_work(folder: str, rounds: str) -> None:
    import time

    from story_pipeline.corpus.index import ClipIndex
    from story_pipeline.eval.retrieval import toyworld_clip_rows
    from story_pipeline.models.text_encoder import get_text_encoder

    encoder = get_text_encoder()
    encoder.encode(["warm up"])
    clips = toyworld_clip_rows(12, seed=5)[0]
    print("ready", flush=True)
    for r in range(int(rounds)):
        go = Path(folder) / f"go_{r}"
        while not go.exists():
            time.sleep(0.0005)
        ClipIndex(Path(folder) / f"db_{r}", encoder=encoder).upsert(clips)
        print(f"round {r}", flush=True)


# --- depth: the shot_depth stage ---------------------------------------------------------------------
def depth_retrievals(clips_dir: str):
    """One ShotRetrieval per clip file, as retrieval would hand it to the depth stage."""
    import decord

    from story_pipeline.corpus.retrieve import ShotRetrieval

    out = []
    for path in sorted(Path(clips_dir).glob("*.mp4")):
        n = len(decord.VideoReader(str(path)))
        chosen = {"clip_id": path.stem, "path": str(path), "start_frame": 0, "end_frame": n, "fps": 12.0,
                  "score": 1.0, "caption": "", "duration_s": n / 12.0}
        out.append(ShotRetrieval("crash", path.stem, "", 1.0, [chosen], chosen))
    return out


def depth_setup(clips_dir: str, net_dir: str):
    import torch

    from story_pipeline.depth.estimators import load_estimator

    torch.set_num_threads(1)
    return load_estimator("toyworld", net_dir), depth_retrievals(clips_dir)


def depth_work(state, out_dir: str) -> None:
    from story_pipeline.depth.stage import shot_depth_cached

    estimator, retrievals = state
    for r in retrievals:
        phase(f"clip {r.shot_id}")
        shot_depth_cached(r, DEPTH_FRAMES, DEPTH_SIZE, estimator, Path(out_dir))


# --- personalize: the character_timeinv stage --------------------------------------------------------
PERSONALIZE = dict(steps=24, checkpoint_every=4, frames=2, batch=1, sample_steps=2)  # small, still real


def model_setup(story_path: str, generator_folder: str):
    import torch

    from story_pipeline.render.generator import load_generator
    from story_pipeline.story_file import load_story
    from story_pipeline.models.judge import get_judge

    torch.set_num_threads(1)
    get_judge()  # imports and first loads before any fork
    return load_story(story_path), load_generator("toyworld", generator_folder)


def personalize_work(state, out_dir: str) -> None:
    from story_pipeline.personalize.character import personalize_character_cached
    from story_pipeline.personalize.config import PersonalizeConfig

    story, generator = state
    phase("start")
    personalize_character_cached(story, story.characters[0], generator, PersonalizeConfig(**PERSONALIZE),
                                 Path(out_dir), progress=lambda done, total: phase(f"step {done}"))


# --- render: the rendered_shots stage -----------------------------------------------------------------
RENDER_OVERRIDES = {"steps": 6}


def render_depth(out: Path) -> Path:
    """A shot's depth memo made from a ToyWorld clip's true depth (what shot_depth hands to rendering)."""
    import numpy as np

    from story_pipeline.depth.structure import MotionStructure, normalise_depth, resize_depth, save_motion_structure
    from story_pipeline.toyworld import render_clip, sample_specs

    clip = render_clip(sample_specs(1, 3)[0])
    depth = normalise_depth(resize_depth(1.0 / np.maximum(clip.depth[:16], 1e-3), (64, 64)), "clip")
    return save_motion_structure(MotionStructure(depth.astype(np.float32), None, {"clip_id": "crash"}), out)


def render_work(state, depth_path: str, out_dir: str) -> None:
    from story_pipeline.render.shot import render_shot_cached

    story, generator = state
    phase("start")
    render_shot_cached(story, story.shots[0], Path(depth_path), generator, Path(out_dir),
                       progress=lambda done, total: phase(f"step {done}"), overrides=RENDER_OVERRIDES)


# --- entry points -------------------------------------------------------------------------------------
def serve(stage: str, *setup_args) -> None:
    setup, work = {"corpus": (corpus_setup, corpus_work), "depth": (depth_setup, depth_work),
                   "personalize": (model_setup, personalize_work), "render": (model_setup, render_work)}[stage]
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
                faulthandler.dump_traceback_later(HANG_SECONDS, exit=False)
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
    elif command == "upserts":
        upserts_work(*args)
        print("done", flush=True)
    elif command == "depth":
        clips_dir, out_dir, net_dir = args
        depth_work(depth_setup(clips_dir, net_dir), out_dir)
        print("done", flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}")
