"""Crash safety: the corpus build (render + ingest + index), the depth stage, personalization
training and shot rendering are SIGKILLed at seeded random moments, rerun to completion, and must
end exactly where a clean run ends (training resumes from its last checkpoint).

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_crash_safety.py

How a kill lands: the stages run in a fork server (``tests/crash_drivers.py serve``: imports and
models load once, every attempt is a forked child in its own session doing the stage's real work),
printing a marker as they go: each ToyWorld clip rendered, each video ingested, the index upsert,
each shot's depth. A kill point is a seeded choice of phase and of a marker in it, plus a seeded
random delay of up to the time the clean run took to its next marker. A chain takes its kill
points in run order, so the restarts crash the render, then the ingest, then the index writes,
then it reruns to completion. SIGKILL goes to the child's process group (ffmpeg dies too).
The real ``story corpus build`` command is also killed twice as a plain process and rerun.

After every kill, each file under its real name must be whole (videos decode, tables read, the
index holds all rows or none). After the final rerun the outputs must equal a clean run's: ToyWorld
files and previews byte for byte, the clip manifest row for row, the LanceDB rows, vectors, indexes
and file counts, the depth safetensors and GIFs byte for byte, and no temporary file anywhere.
"""

import csv
import hashlib
import json
import os
import queue
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from story_pipeline.depth.structure import load_motion_structure, save_motion_structure
from story_pipeline.corpus.index import ClipIndex
from story_pipeline.corpus.ingest import read_manifest
from story_pipeline.corpus.probe import probe_video
from story_pipeline.corpus.search import search
from story_pipeline.eval.retrieval import toyworld_clip_rows

DRIVER = Path(__file__).with_name("crash_drivers.py")
STORY = Path(sys.executable).with_name("story")
N_CLIPS = 12  # ToyWorld clips in the crashed corpus: ~2 s of rendering, one embedding batch
CORPUS_CHAINS, CORPUS_KILLS = 3, 4  # 3 chains from an empty data root, 4 kills each
CORPUS_PHASES = ["toyworld", "ingest", "index", "index"]  # the LanceDB writes are the most delicate: twice the odds
DEPTH_CHAINS, DEPTH_KILLS = 2, 4
CLI_KILLS = 2  # kills of the real `story corpus build` process
SEED = 7
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           TOKENIZERS_PARALLELISM="false", COLUMNS="120")
ENV.pop("DAGSTER_HOME", None)


# --- running and killing --------------------------------------------------------------------------
@dataclass
class Attempt:
    kill_at: tuple | None  # (marker, delay): the kill point aimed at (None: run to completion)
    killed: bool
    returncode: int
    seconds: float
    markers: list = field(default_factory=list)  # (marker, seconds since the start), in order
    hung: str = ""  # the stacks a hung attempt wrote before the test killed it ("" if it did not hang)

    @property
    def where(self) -> str:
        """Where the kill landed: the last marker seen, and the delay after the one aimed at."""
        if self.kill_at is None:
            return "run to completion"
        if not self.markers:  # a plain process: the delay counts from its start
            return self.kill_at[0] + ("" if self.killed else " (finished first)")
        return f"{self.markers[-1][0]} +{self.kill_at[1]:.2f}s" + ("" if self.killed else " (finished first)")


class StageServer:
    """``crash_drivers.py serve STAGE``: one attempt = one forked child, optionally SIGKILLed."""

    def __init__(self, args: list, log: Path):
        self.log = open(log, "a")
        self.proc = subprocess.Popen([sys.executable, str(DRIVER), "serve", *args], env=ENV, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._next(timeout=300) == "ready", log.read_text()[-3000:]

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _next(self, timeout: float) -> str | None:
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise AssertionError(f"the stage server died: {Path(self.log.name).read_text()[-3000:]}")
        return line

    def attempt(self, args: list, kill_at: tuple[str, float] | None = None, order: list | None = None,
                timeout: float = 180) -> Attempt:
        """Run the stage once; with ``kill_at=(marker, delay)``, SIGKILL it ``delay`` s after it prints
        that marker or a later one in ``order``. A run that printed ``done`` is never killed."""
        rank = {m: i for i, m in enumerate(order or [])}
        self.log.flush()
        log_start, hung = len(Path(self.log.name).read_text()), ""
        t0 = time.perf_counter()
        self.proc.stdin.write("run " + shlex.join(map(str, args)) + "\n")
        self.proc.stdin.flush()
        pid, markers, deadline, done, killed = None, [], None, False, False
        while True:
            wait = 0.1 if deadline is None else max(0.001, deadline - time.perf_counter())
            try:
                line = self._next(timeout=wait)
            except queue.Empty:
                line = ""
            if line.startswith("child "):
                pid = int(line.split()[1])
            elif line.startswith("phase "):
                markers.append((line.removeprefix("phase "), time.perf_counter() - t0))
                if kill_at is not None and deadline is None and rank.get(markers[-1][0], len(rank)) >= rank[kill_at[0]]:
                    deadline = time.perf_counter() + kill_at[1]
            elif line == "done":
                done = True
            elif line.startswith("exit "):
                return Attempt(kill_at, killed, int(line.split()[1]), time.perf_counter() - t0, markers, hung)
            if deadline is not None and not done and not killed and time.perf_counter() >= deadline and pid:
                os.killpg(pid, signal.SIGKILL)
                killed = True
            if time.perf_counter() - t0 > timeout and pid and not killed:  # hung: its stacks are in the log
                os.killpg(pid, signal.SIGKILL)
                killed, hung = True, Path(self.log.name).read_text()[log_start:][-6000:]

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.log.close()


def kill_points(clean: Attempt, phases: list[str], n: int, rng: random.Random) -> list[tuple[str, float]]:
    """``n`` (marker, delay) pairs: a phase uniformly from ``phases`` (repeat one to weight it), one of
    its markers uniformly, a delay uniformly up to the clean run's time to the next marker; sorted in
    run order."""
    times = clean.markers + [("done", clean.seconds)]
    order = [m for m, _ in clean.markers]
    points = []
    for _ in range(n):
        phase = rng.choice(phases)
        i = rng.choice([k for k, (m, _) in enumerate(clean.markers) if m.split()[0] == phase])
        points.append((order[i], rng.uniform(0.0, times[i + 1][1] - times[i][1])))
    return sorted(points, key=lambda p: (order.index(p[0]), p[1]))


def retried_if_hung(attempt) -> Attempt:
    """``attempt()``, once more if it hung (a forked child can inherit a lock a thread of the server
    held; seen once in many runs); a second hang fails with the stacks it wrote."""
    first = attempt()
    if not first.hung:
        return first
    warnings.warn(f"an attempt hung and was retried; its stacks:\n{first.hung}")
    again = attempt()
    assert not again.hung, f"the attempt hung twice; stacks of the second:\n{again.hung}"
    return again


def crash_chain(server: StageServer, args: list, clean: Attempt, phases: list[str], n: int, seed: int,
                check) -> list[Attempt]:
    """Attempts killed at ``n`` kill points in turn (``check()`` after each kill), then one run to the end
    (the last attempt returned)."""
    order = [m for m, _ in clean.markers]
    attempts = []
    for point in kill_points(clean, phases, n, random.Random(seed)):
        attempts.append(retried_if_hung(lambda: server.attempt(args, kill_at=point, order=order)))
        if attempts[-1].killed:
            assert attempts[-1].returncode == -signal.SIGKILL
            check()
        else:
            assert attempts[-1].returncode == 0
    final = retried_if_hung(lambda: server.attempt(args))
    assert final.returncode == 0, "the rerun after the kills failed (stderr is in the test's log file)"
    return attempts + [final]


# --- what must hold -------------------------------------------------------------------------------
def temp_files(root: Path) -> list[str]:
    """Leftovers of interrupted writes: dot-files/folders (atomic temps, `.x.adding` copies), *.tmp.
    Dagster's own run storage is not ours to judge."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] == "dagster_home":
            continue
        if any(part.startswith(".") for part in rel.parts) or p.suffix in (".tmp", ".partial"):
            out.append(str(rel))
    return sorted(out)


def visible(folder: Path, pattern: str) -> list[Path]:
    """Files under their real names (temp files of atomic writes start with '.')."""
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith(".")) if folder.exists() else []


def lance_files(root: Path) -> dict[str, int]:
    """Files per LanceDB folder (data, _versions, _transactions, _indices): what a clean run writes,
    no orphans of an interrupted commit beside it."""
    table = root / "lancedb" / "clips.lance"
    counts: dict[str, int] = {}
    for p in table.rglob("*") if table.exists() else []:
        if p.is_file():
            top = p.relative_to(table).parts[0]
            counts[top] = counts.get(top, 0) + 1
    return counts


def check_corpus_whole(root: Path, n: int) -> None:
    """Every file a reader can see under its real name is complete (killed at any moment)."""
    corpus = root / "corpus" / "toyworld"
    for mp4 in visible(corpus / "clips", "*.mp4"):
        assert probe_video(mp4).num_frames >= 8, mp4
    for npz in visible(corpus / "depth_gt", "*.npz"):
        assert np.load(npz)["depth"].ndim == 3, npz
    if (corpus / "manifest.csv").exists():  # written last: the corpus is complete
        with open(corpus / "manifest.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == n
        assert json.loads((corpus / "params.json").read_text())["n"] == n
        assert len(visible(corpus / "clips", "*.mp4")) == n
    parquet = root / "artifacts" / "clip_corpus" / "clips.parquet"
    if parquet.exists():
        assert read_manifest(parquet).num_rows == n
    if (thumbs := parquet.with_name("thumbnails.png")).exists():
        Image.open(thumbs).verify()
    if (root / "lancedb" / "clips.lance").exists():
        index = ClipIndex(root / "lancedb")
        assert index.count() == n  # one commit holds every row: never a part of them
        assert len(search(index, "a cat", k=3, mode="fts")) >= 1


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corpus_outputs(root: Path) -> dict:
    """What a corpus build leaves, with the data root taken out of the paths stored in it."""
    prefix = str(root.resolve())
    files = {str(p.relative_to(root)): sha256(p) for sub in ("corpus", "artifacts") for p in (root / sub).rglob("*")
             if p.is_file() and p.name != "clips.parquet"}  # the parquet stores absolute paths: compared by rows
    rows = read_manifest(root / "artifacts" / "clip_corpus" / "clips.parquet").to_pylist()
    table = ClipIndex(root / "lancedb").table
    data = table.to_arrow().sort_by("clip_id")
    index_rows = data.drop_columns(["vector"]).to_pylist()
    for r in rows + index_rows:
        r["path"] = r["path"].replace(prefix, "<root>")
    return {"files": files, "manifest": rows, "index_rows": index_rows,
            "indexes": sorted((ix.index_type, tuple(ix.columns)) for ix in table.list_indices()),
            "vectors": np.asarray(data["vector"].to_pylist(), np.float32), "lance_files": lance_files(root)}


def assert_same_outputs(got: dict, want: dict) -> None:
    assert got["files"] == want["files"]  # ToyWorld videos, depth, captions, thumbnails: byte for byte
    assert got["manifest"] == want["manifest"]
    assert got["index_rows"] == want["index_rows"]  # exactly the expected rows: no duplicate, no loss
    assert got["indexes"] == want["indexes"]  # full-text and clip-id indexes exist, as after a clean run
    np.testing.assert_array_equal(got["vectors"], want["vectors"])
    assert got["lance_files"] == want["lance_files"]


def record(record_property, attempts: list[Attempt], started: float) -> None:
    """Figures for docs/reliability.md (scripts/reliability_report.py reads them from the JUnit XML)."""
    kills = [a for a in attempts if a.killed]
    record_property("faults_injected", len(kills))
    record_property("faults_survived", len(kills))  # the test fails unless every one was survived
    record_property("kill_points", "; ".join(a.where for a in attempts))
    record_property("seconds", round(time.perf_counter() - started, 1))


# --- the corpus build -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory):
    server = StageServer(["corpus"], tmp_path_factory.mktemp("logs") / "corpus_server.log")
    yield server
    server.close()


@pytest.fixture(scope="module")
def clean_corpus(corpus_server, tmp_path_factory) -> tuple[Path, Attempt]:
    root = tmp_path_factory.mktemp("clean") / "data"
    clean = corpus_server.attempt([root, N_CLIPS])
    assert clean.returncode == 0
    assert temp_files(root) == []
    return root, clean


@pytest.mark.slow
@pytest.mark.parametrize("chain", range(CORPUS_CHAINS))
def test_corpus_build_killed_at_random_points_ends_like_a_clean_run(corpus_server, clean_corpus, tmp_path,
                                                                     record_property, chain):
    clean_root, clean = clean_corpus
    root = tmp_path / "data"
    started = time.perf_counter()
    attempts = crash_chain(corpus_server, [root, N_CLIPS], clean, CORPUS_PHASES, CORPUS_KILLS,
                           SEED + chain, check=lambda: check_corpus_whole(root, N_CLIPS))
    record(record_property, attempts, started)
    where = "; ".join(a.where for a in attempts)
    assert sum(a.killed for a in attempts) >= CORPUS_KILLS - 1, where  # a delay past the end finishes instead
    assert temp_files(root) == [], where
    assert_same_outputs(corpus_outputs(root), corpus_outputs(clean_root))


def corpus_state(root: Path) -> str:
    """How far a corpus build got, from what it left."""
    if (root / "lancedb" / "clips.lance").exists():
        return "index committed" + ("" if ClipIndex(root / "lancedb").table.list_indices() else ", indexes not built")
    if (root / "artifacts" / "clip_corpus" / "clips.parquet").exists():
        return "manifest written, no index"
    if (root / "corpus" / "toyworld" / "manifest.csv").exists():
        return "corpus rendered, ingest unfinished"
    clips = visible(root / "corpus" / "toyworld" / "clips", "*.mp4")
    return f"render: {len(clips)} of {N_CLIPS} clips" if (root / "corpus").exists() else "start-up"


def first_write_after(root: Path, since: float) -> bool:
    """True once the command wrote a file of its own (Dagster's run storage aside) after ``since``."""
    for p in root.rglob("*") if root.exists() else []:
        try:
            if "dagster_home" not in p.parts and p.stat().st_mtime > since:
                return True
        except FileNotFoundError:  # a temp file renamed away while we looked
            continue
    return False


@pytest.mark.slow
def test_story_corpus_build_command_killed_then_rerun(clean_corpus, tmp_path, record_property):
    """The real command as a plain process (it prints no markers): killed twice a seeded delay of
    0-9 s after its first write (its start-up takes 6-10 s, its work ~10 s), then run to completion."""
    clean_root, clean = clean_corpus
    root = tmp_path / "data"
    env = dict(ENV, STORY_DATA_ROOT=str(root))
    cmd = [str(STORY), "corpus", "build", "--toyworld-clips", str(N_CLIPS)]
    rng = random.Random(SEED)
    started = time.perf_counter()
    attempts = []
    with open(tmp_path / "log", "w") as log:
        for _ in range(CLI_KILLS):
            delay, since = rng.uniform(0.0, 9.0), time.time()
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
            while proc.poll() is None and not first_write_after(root, since):
                time.sleep(0.02)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            killed = proc.returncode == -signal.SIGKILL
            attempts.append(Attempt((f"first write +{delay:.1f}s: {corpus_state(root)}", 0.0), killed,
                                    proc.returncode, delay))
            if killed:
                check_corpus_whole(root, N_CLIPS)
        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"Corpus: {N_CLIPS} clips" in " ".join(final.stdout.split())
    record(record_property, attempts, started)
    assert sum(a.killed for a in attempts) >= 1
    assert temp_files(root) == []
    assert_same_outputs(corpus_outputs(root), corpus_outputs(clean_root))


def test_index_interrupted_between_its_rows_and_its_indexes_is_completed_by_the_rerun(tmp_path, monkeypatch):
    """The narrowest window of the index phase, hit on purpose: the rows are committed, the process
    dies before the full-text and clip-id indexes are built. The rerun has nothing to embed and must
    still build them (before the fix it returned early and the indexes never came)."""
    clips, _ = toyworld_clip_rows(20, seed=0)
    clean = ClipIndex(tmp_path / "clean")
    clean.upsert(clips)

    def interrupted(self, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C (or a kill) does here

    monkeypatch.setattr(ClipIndex, "_ensure_indexes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ClipIndex(tmp_path / "crashed", encoder=clean.encoder).upsert(clips)
    monkeypatch.undo()
    crashed = ClipIndex(tmp_path / "crashed", encoder=clean.encoder)
    assert crashed.count() == 20 and crashed.table.list_indices() == []  # the state the kill left
    update = crashed.upsert(clips)
    assert update.embedded == 0 and update.unchanged == 20
    kinds = lambda index: sorted((ix.index_type, tuple(ix.columns)) for ix in index.table.list_indices())  # noqa: E731
    assert kinds(crashed) == kinds(clean) and len(kinds(clean)) == 2


# --- depth extraction -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def depth_net(tmp_path_factory) -> Path:
    """A tiny random ToyWorld depth net (the shipped one may be retrained while tests run)."""
    import torch

    from story_pipeline.models.depth_net import DepthNetConfig, build_depth_net

    folder = tmp_path_factory.mktemp("depth_net")
    torch.manual_seed(0)
    build_depth_net(DepthNetConfig(input_size=32, channels=(8, 16), groups=4)).save_pretrained(str(folder))
    return folder


def depth_outputs(out: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_depth_extraction_killed_at_random_points_ends_like_a_clean_run(clean_corpus, depth_net, tmp_path,
                                                                        record_property):
    clean_root, _ = clean_corpus
    clips = clean_root / "corpus" / "toyworld" / "clips"
    server = StageServer(["depth", clips, depth_net], tmp_path / "depth_server.log")
    try:
        clean = server.attempt([tmp_path / "clean"])
        assert clean.returncode == 0
        want = depth_outputs(tmp_path / "clean")
        assert len(want) == 2 * N_CLIPS  # a safetensors + a GIF per shot
        # The reference is reproducible: this process saves the same content to the same bytes
        # (safetensors keeps metadata in a per-process hash map; save_motion_structure sorts it).
        for p in visible(tmp_path / "clean", "*.safetensors"):
            save_motion_structure(load_motion_structure(p), tmp_path / "again" / p.name)
            assert sha256(tmp_path / "again" / p.name) == want[p.name]

        started = time.perf_counter()
        attempts = []
        for chain in range(DEPTH_CHAINS):
            out = tmp_path / f"crashed{chain}"

            def check():  # every memo visible under its real name loads; a tensor never lacks its preview
                for p in visible(out, "*.safetensors"):
                    assert load_motion_structure(p).depth.shape == (16, 64, 64)
                    assert p.with_suffix(".gif").exists()
                for p in visible(out, "*.gif"):
                    Image.open(p).verify()

            attempts += crash_chain(server, [out], clean, ["clip"], DEPTH_KILLS, SEED + chain, check)
            assert temp_files(out) == [], "; ".join(a.where for a in attempts)
            assert depth_outputs(out) == want  # byte-identical tensors and previews
    finally:
        server.close()
    record(record_property, attempts, started)
    assert sum(a.killed for a in attempts) >= DEPTH_CHAINS * DEPTH_KILLS - 2, "; ".join(a.where for a in attempts)


# --- personalization and rendering ----------------------------------------------------------------
PERSONALIZE_KILLS = RENDER_KILLS = 3


@pytest.fixture(scope="module")
def example_story(tmp_path_factory) -> Path:
    """The tabby example story with its reference images, in a folder of this module's own (a fresh clone
    has no refs until something renders them, and other test files may run first or in parallel)."""
    from story_pipeline.examples import copy_examples, generate_example_references

    dst = copy_examples(tmp_path_factory.mktemp("examples"))
    generate_example_references(dst)
    return dst / "tabby_adventure" / "story.yaml"


def without_timings(meta: dict) -> dict:
    return {k: without_timings(v) if isinstance(v, dict) else v for k, v in meta.items()
            if not k.endswith("seconds")}


def personalize_outputs(out: Path) -> dict:
    from safetensors.torch import load_file

    learned = visible(out, "*.safetensors")
    assert len(learned) == 1 and not learned[0].name.endswith(".ckpt.safetensors"), learned
    meta = without_timings(json.loads(learned[0].with_suffix(".json").read_text()))
    return {"name": learned[0].name, "tensors": load_file(learned[0]), "metrics": meta["metrics"]}


@pytest.mark.slow
def test_personalization_killed_at_random_points_resumes_to_the_clean_weights(tmp_path, record_property,
                                                                             save_tiny_video_model, example_story):
    """SIGKILL during TimeInv + LoRA training (and its final sample shots): the rerun resumes from
    the last checkpoint and ends with exactly the clean run's table, LoRA and metrics."""
    tiny = save_tiny_video_model(tmp_path / "tiny_video")  # the shipped model's code path, a small random model
    server = StageServer(["personalize", example_story, tiny], tmp_path / "personalize_server.log")
    try:
        clean = server.attempt([tmp_path / "clean"])
        assert clean.returncode == 0
        want = personalize_outputs(tmp_path / "clean")
        out = tmp_path / "crashed"

        def check():  # every safetensors under its real name is whole: a checkpoint or the learned concept
            from safetensors import safe_open

            for p in visible(out, "*.safetensors"):
                with safe_open(str(p), "pt") as f:
                    assert ("param.table.rows" if p.name.endswith(".ckpt.safetensors") else "table") in f.keys(), p
            for p in visible(out, "*.json"):  # the memo's metadata names a learned file that exists
                assert p.with_suffix(".safetensors").exists() and "metrics" in json.loads(p.read_text())

        started = time.perf_counter()
        attempts = crash_chain(server, [out], clean, ["step"], PERSONALIZE_KILLS, SEED, check)
        got = personalize_outputs(out)
        assert temp_files(out) == [] and not list(out.glob("*.ckpt.safetensors"))
        assert got["name"] == want["name"] and got["tensors"].keys() == want["tensors"].keys()
        for k, v in want["tensors"].items():
            assert torch.equal(got["tensors"][k], v), k
        assert got["metrics"] == want["metrics"]
    finally:
        server.close()
    record(record_property, attempts, started)
    assert sum(a.killed for a in attempts) >= PERSONALIZE_KILLS - 1, "; ".join(a.where for a in attempts)
    # a rerun's first step marker is past step 1: it resumed from a checkpoint instead of starting over
    firsts = [int(a.markers[1][0].split()[1]) for a in attempts[1:] if len(a.markers) > 1]
    assert any(first > 1 and first % 4 == 0 for first in firsts), firsts


@pytest.mark.slow
def test_rendering_killed_at_random_points_ends_like_a_clean_run(tmp_path, record_property, save_tiny_video_model,
                                                                 example_story):
    """SIGKILL while a shot samples or writes its mp4/GIF/frames/metadata: never a half memo, and the
    rerun writes byte-identical video, preview and frames."""
    sys.path.insert(0, str(DRIVER.parent))
    from crash_drivers import render_depth

    depth = render_depth(tmp_path / "depth" / "shot.safetensors")
    tiny = save_tiny_video_model(tmp_path / "tiny_video")  # the shipped model's code path, a small random model
    server = StageServer(["render", example_story, tiny], tmp_path / "render_server.log")

    def outputs(out: Path) -> dict:
        files = {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.suffix != ".json"}
        metas = [without_timings(json.loads(p.read_text())) for p in visible(out, "*.json")]
        return {"files": files, "meta": metas}

    try:
        clean = server.attempt([depth, tmp_path / "clean"])
        assert clean.returncode == 0
        want = outputs(tmp_path / "clean")
        assert sorted(Path(n).suffix for n in want["files"]) == [".gif", ".mp4", ".safetensors"]
        out = tmp_path / "crashed"

        def check():  # the metadata (written last) marks a complete memo: its video decodes
            for meta in visible(out, "*.json"):
                assert probe_video(meta.with_suffix(".mp4")).num_frames == 16
                Image.open(meta.with_suffix(".gif")).verify()
            for mp4 in visible(out, "*.mp4"):
                assert probe_video(mp4).num_frames == 16

        started = time.perf_counter()
        attempts = crash_chain(server, [depth, out], clean, ["step", "step", "start"], RENDER_KILLS, SEED, check)
        assert temp_files(out) == [] and outputs(out) == want
    finally:
        server.close()
    record(record_property, attempts, started)
    assert sum(a.killed for a in attempts) >= RENDER_KILLS - 1, "; ".join(a.where for a in attempts)
