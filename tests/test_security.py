"""Security defaults: local-only servers, no pickle, safe YAML, confined story paths, and decode
limits checked before any decoder sees an untrusted file.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_security.py
"""

import ast
import io
import os
import pickle
from pathlib import Path

import decord
import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from story_pipeline import cli
from story_pipeline.corpus import probe
from story_pipeline.corpus import frames as clip_frames
from story_pipeline.config import DecodeLimits
from story_pipeline.dagster_home import dagster_yaml
from story_pipeline.corpus.frames import ClipUnreadable, decode_frames
from story_pipeline.corpus.ingest import ingest_corpus
from story_pipeline.corpus.probe import VideoRejected, probe_video
from story_pipeline.story.spec import StoryError
from story_pipeline.story.images import load_reference_image
from story_pipeline.story_file import load_story
from story_pipeline.video_io import write_mp4

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "story_pipeline"
SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "scripts").glob("*.py"))
LOCAL = "127.0.0.1"


# --- servers bind 127.0.0.1 --------------------------------------------------------------------
@pytest.mark.parametrize("command", ["ui", "mlflow-ui"])
def test_server_commands_bind_localhost_by_default(command, tmp_path, monkeypatch):
    """The command's default host, and the command line it would start (captured, not run)."""
    click_command = typer.main.get_command(cli.app).commands[command]
    host = next(p for p in click_command.params if p.name == "host")
    assert host.default == LOCAL
    started = []
    from story_pipeline.cli import servers

    monkeypatch.setattr(servers, "serve", lambda cmd, env=None, cwd=None: started.append(cmd) or 0)
    result = CliRunner().invoke(cli.app, [command], env={"STORY_DATA_ROOT": str(tmp_path), "DAGSTER_HOME": None})
    assert result.exit_code == 0, result.output
    (cmd,) = started
    flag = "-h" if command == "ui" else "--host"
    assert cmd[cmd.index(flag) + 1] == LOCAL
    assert "0.0.0.0" not in " ".join(cmd) and "::" not in cmd
    assert f"http://{LOCAL}:" in result.stdout


def test_no_wildcard_bind_anywhere():
    """No script, doc or module starts a server on every interface."""
    texts = [p.read_text() for p in SOURCES + [REPO / "README.md", REPO / "Makefile"]]
    assert not [t for t in texts if "0.0.0.0" in t]


def test_dagster_home_is_quiet_and_local(tmp_path):
    from story_pipeline.config import Settings
    from story_pipeline.dagster_home import ensure_dagster_home

    home = ensure_dagster_home(Settings(data_root=tmp_path))
    text = (home / "dagster.yaml").read_text()
    assert text == dagster_yaml(Settings(data_root=tmp_path))
    assert "enabled: false" in text.split("telemetry:")[1].split("\n")[1]  # no telemetry sent anywhere
    assert "host" not in text and "0.0.0.0" not in text


def test_dagster_home_follows_its_settings_unless_the_user_took_it_over(tmp_path, monkeypatch):
    """The run queue and the model_heavy pool limit come from Settings; a changed setting rewrites the file
    the project wrote, a file without the project's first line is the user's and stays."""
    from story_pipeline.config import Settings
    from story_pipeline.dagster_home import ensure_dagster_home

    home = ensure_dagster_home(Settings(data_root=tmp_path))
    assert "max_concurrent_runs: 2" in (home / "dagster.yaml").read_text()
    monkeypatch.setenv("STORY_MAX_CONCURRENT_RUNS", "4")
    monkeypatch.setenv("STORY_MODEL_HEAVY_LIMIT", "2")  # a GPU box with two GPUs
    ensure_dagster_home(Settings(data_root=tmp_path))
    text = (home / "dagster.yaml").read_text()
    assert "max_concurrent_runs: 4" in text and "default_limit: 2" in text
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 8\n")  # the user's own
    ensure_dagster_home(Settings(data_root=tmp_path))
    assert (home / "dagster.yaml").read_text() == "concurrency:\n  pools:\n    default_limit: 8\n"


# --- no pickle, no eval ---------------------------------------------------------------------------
PICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _name(node) -> str:
    """'torch.load' for torch.load(...), 'eval' for eval(...)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    kw = next((k for k in call.keywords if k.arg == name), None)
    return kw.value if kw is not None else None


def unsafe_calls(path: Path) -> list[str]:
    """Each call in the file that can run code from data: pickle loading, torch.load without
    weights_only=True, yaml.load without a safe loader, eval/exec, np.load(allow_pickle=True),
    shell=True subprocesses, os.system."""
    out = []
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{shown}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in PICKLERS for n in names):
                out.append(f"{where} imports a pickler")
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        builtin = isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec")
        if builtin or name.endswith((".unsafe_load", ".full_load", "os.system", "os.popen")):
            out.append(f"{where} calls {name}")
        if name == "torch.load":
            w = _keyword(node, "weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                out.append(f"{where} calls torch.load without weights_only=True")
        if name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if _name(loader) not in ("yaml.SafeLoader", "yaml.CSafeLoader", "SafeLoader", "CSafeLoader"):
                out.append(f"{where} calls {name} without a safe loader")
        if name.endswith("np.load") or name.endswith("numpy.load"):
            a = _keyword(node, "allow_pickle")
            if a is not None and not (isinstance(a, ast.Constant) and a.value is False):
                out.append(f"{where} calls np.load with allow_pickle")
        if (s := _keyword(node, "shell")) is not None and not (isinstance(s, ast.Constant) and s.value is False):
            out.append(f"{where} runs a subprocess with shell=True")
    return out


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("import pickle\nimport torch, yaml, subprocess, numpy as np\n"
                   "torch.load('x.pt')\nyaml.load(open('s.yaml'))\neval('1')\n"
                   "np.load('a.npy', allow_pickle=True)\nsubprocess.run('ls', shell=True)\n"
                   "torch.load('y.pt', weights_only=True)\nyaml.load(s, Loader=yaml.SafeLoader)\n")
    found = unsafe_calls(bad)
    assert len(found) == 6, found  # the last two lines are safe


def test_no_pickle_eval_or_unsafe_yaml_in_the_source():
    assert len(SOURCES) > 30
    problems = [p for path in SOURCES for p in unsafe_calls(path)]
    assert problems == []


def test_assets_never_pickle_their_outputs():
    """Every asset returns MaterializeResult (files + metadata): nothing goes through Dagster's
    default IO manager, which pickles return values into the Dagster home."""
    found = 0
    for path in sorted((PACKAGE / "assets").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    _name(d.func if isinstance(d, ast.Call) else d).endswith("asset") for d in node.decorator_list):
                found += 1
                assert node.returns is not None and _name(node.returns).endswith("MaterializeResult"), \
                    f"{path.name}: asset {node.name} returns {ast.unparse(node.returns) if node.returns else None}"
    assert found >= 5


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch " + str(Path.cwd() / "pwned"),))


def test_pickled_checkpoints_do_not_run_code_under_the_pinned_torch(tmp_path, monkeypatch):
    """controlnet_aux loads MiDaS/Zoe .pt files with a bare torch.load(path): safe only because
    torch >= 2.6 defaults to weights_only=True. A checkpoint carrying code is refused, not run."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "dpt_hybrid-midas-501f0c75.pt"
    path.write_bytes(pickle.dumps({"model": _Boom()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu")  # exactly how controlnet_aux calls it
    assert not (tmp_path / "pwned").exists()


# --- YAML: safe loading -----------------------------------------------------------------------------
TAGS = ["!!python/object/apply:os.system ['touch pwned']", "!!python/object/new:os.system ['touch pwned']",
        "!!python/name:os.system", "!!python/module:os"]


@pytest.mark.parametrize("tag", TAGS)
def test_story_with_a_python_tag_is_one_sentence_and_runs_nothing(tag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "story.yaml").write_text(f"title: {tag}\nshots:\n  - id: a\n    prompt: a cat jumps\n")
    with pytest.raises(StoryError) as err:
        load_story(tmp_path / "story.yaml")
    assert str(err.value).startswith(f"{tmp_path / 'story.yaml'}:1: unsupported YAML tag")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


# --- story paths stay in the story folder ---------------------------------------------------------------
def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, format="PNG")
    return buf.getvalue()


ESCAPES = {
    "relative": lambda s, out: "../outside/x.png",
    "deep relative": lambda s, out: "refs/../../outside/x.png",
    "absolute": lambda s, out: str(out / "x.png"),
    "absolute through ..": lambda s, out: str(s / ".." / "outside" / "x.png"),
    "symlinked file": lambda s, out: (s / "refs" / "l.png").symlink_to(out / "x.png") or "refs/l.png",
    "symlinked folder": lambda s, out: (s / "refs" / "d").symlink_to(out) or "refs/d/x.png",
}


@pytest.mark.parametrize("how", ESCAPES)
def test_reference_images_outside_the_story_folder_are_refused(how, tmp_path):
    story, outside = tmp_path / "story", tmp_path / "outside"
    (story / "refs").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.png").write_bytes(png())
    image = ESCAPES[how](story, outside)
    (story / "story.yaml").write_text("characters:\n  - token: <c>\n    class_word: cat\n"
                                      f"    images: ['{image}']\nshots:\n  - id: a\n    prompt: a <c> jumps\n")
    with pytest.raises(StoryError) as err:
        load_story(story / "story.yaml")
    assert err.value.field == "characters[0].images[0]" and "outside the story folder" in str(err.value)


# --- decode limits come before any decoder ------------------------------------------------------------------
class Counter:
    """Wraps a callable and counts calls (the real one still runs)."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def decoders(monkeypatch):
    """Counters on every decoder entry point the ingest, depth and preview stages use."""
    counters = {"decord": Counter(decord.VideoReader), "av": Counter(probe.av.open),
                "scenedetect": Counter(probe.open_video), "pil_load": Counter(Image.Image.load)}
    monkeypatch.setattr(probe.decord, "VideoReader", counters["decord"])
    monkeypatch.setattr(clip_frames.decord, "VideoReader", counters["decord"])
    monkeypatch.setattr(probe.av, "open", counters["av"])
    monkeypatch.setattr(probe, "open_video", counters["scenedetect"])
    def counted_load(image, *args, **kwargs):  # a method: the Counter instance would not bind as `self`
        counters["pil_load"].calls += 1
        return counters["pil_load"].real(image, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "load", counted_load)
    return counters


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    frames = np.random.default_rng(0).integers(0, 255, (12, 128, 128, 3), dtype=np.uint8)
    return write_mp4(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=12)


def test_a_video_over_the_size_limit_is_never_opened(video, decoders):
    with pytest.raises(VideoRejected, match="file size"):
        probe_video(video, DecodeLimits(max_file_bytes=1000))
    assert (decoders["av"].calls, decoders["decord"].calls) == (0, 0)


@pytest.mark.parametrize("limits,words", [
    (DecodeLimits(max_width=64, max_height=64), "resolution 128x128"),
    (DecodeLimits(max_duration_s=0.5), "duration 1.0 s"),
    (DecodeLimits(max_frames=5), "12 frames"),
])
def test_a_video_over_a_header_limit_is_never_decoded(video, decoders, limits, words):
    with pytest.raises(VideoRejected, match=words):
        probe_video(video, limits)
    assert decoders["av"].calls == 1 and decoders["decord"].calls == 0  # the header only


def test_ingest_and_depth_check_limits_before_their_decoders(video, decoders, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "clip.mp4").write_bytes(video.read_bytes())
    (tmp_path / "c" / "clip.txt").write_text("noise")
    result = ingest_corpus(tmp_path / "c", DecodeLimits(max_file_bytes=1000))
    assert [r.kind for r in result.rejected] == ["too_large"]
    with pytest.raises(ClipUnreadable, match="file size"):
        decode_frames(video, np.arange(4), DecodeLimits(max_file_bytes=1000))
    assert decoders["decord"].calls == decoders["scenedetect"].calls == decoders["av"].calls == 0
    # The control: within the limits every decoder runs, so the counters do count.
    decode_frames(video, np.arange(4), DecodeLimits())
    assert decoders["decord"].calls == 2 and decoders["av"].calls == 1  # probe (header + index), then frames


def test_a_png_bomb_is_refused_from_its_header(tmp_path, decoders):
    import struct
    import zlib

    data = bytearray(png())
    data[16:24] = struct.pack(">II", 20000, 20000)  # 400 MP claimed by a 200-byte file
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    decoders["pil_load"].calls = 0  # making the PNG above decoded pixels; reading it must not
    with pytest.raises(StoryError, match="claims more than"):
        load_reference_image(tmp_path / "bomb.png")
    assert decoders["pil_load"].calls == 0  # no pixel was decoded


def test_subprocesses_get_argument_lists_not_shell_strings():
    """The ffmpeg/dagster/mlflow commands are lists: a file name can never become shell syntax."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _name(node.func).startswith("subprocess.") and node.args:
                assert not isinstance(node.args[0], (ast.Constant, ast.JoinedStr)), f"{path}:{node.lineno}"
