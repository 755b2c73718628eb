"""Story scripts -> story files (issue 19): key plots, characters, pronouns, places, the written YAML,
one-sentence errors that write nothing, the language-model planner against a local HTTP server,
the registry and the Dagster story_plan asset. No model renders anything here."""

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest

from story_pipeline.config import Settings
from story_pipeline.plan import plan_script, plan_to_file, planned_path, write_plan
from story_pipeline.plan.lm import PlannerError
from story_pipeline.story_file import load_story
from story_pipeline.story.spec import StoryError, shot_content_hash

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tabby_tale" / "story.txt"
HEADER = """---
title: Test
characters:
  Tabby: {token: <tabby>, class_word: cat, images: [refs/tabby.png]}
  Bolt: {token: <bolt>, class_word: robot, images: [refs/bolt.png], aliases: [the tin man]}
---
"""


def script(folder: Path, prose: str, header: str = HEADER, name: str = "story.txt") -> Path:
    from PIL import Image

    (folder / "refs").mkdir(parents=True, exist_ok=True)
    for n, colour in (("tabby", "teal"), ("bolt", "gold")):
        Image.new("RGB", (64, 64), colour).save(folder / "refs" / f"{n}.png")
    path = folder / name
    path.write_text(header + prose, encoding="utf-8")
    return path


def shots(path: Path) -> list[tuple[str, str]]:
    plan = plan_script(path, check_images=False)
    return [(s.id, s.prompt) for s in plan.story.shots]


# --- planning -------------------------------------------------------------------------------------
def test_example_script_plans_one_shot_per_key_plot(tmp_path):
    folder = tmp_path / "tabby_tale"
    folder.mkdir()
    shutil.copyfile(EXAMPLE, folder / "story.txt")
    for n in ("tabby", "bolt"):
        (folder / "refs").mkdir(exist_ok=True)
        for i in range(4):
            (folder / "refs" / f"{n}_{i}.png").write_bytes(b"x")
    plan = plan_script(folder / "story.txt", check_images=False)
    story = plan.story
    assert story.id == "tabby_tale" and story.title == "Tabby and Bolt"
    assert [c.token for c in story.characters] == ["<tabby>", "<bolt>"]
    assert [s.id for s in story.shots] == ["tabby-walk", "tabby-leap", "bolt-roll", "bolt-wave", "tabby-spin",
                                           "tabby-sit"]
    by_id = {s.id: s for s in story.shots}
    # "Then she leaped": she -> Tabby; the place of the first sentence carries over
    assert by_id["tabby-leap"].prompt == "a <tabby> leaps into the air on the snowy field"
    # an alias ("the little robot") is the character
    assert by_id["bolt-wave"].prompt.startswith("a <bolt> waves hello")
    # the default query drops the place and names the class word: the motion is what is retrieved
    assert story.shot_query(by_id["tabby-leap"]) == "a cat leaps into the air"
    assert story.shot_query(by_id["tabby-walk"]) == "a cat walks to the right"
    # the file a person edits: each shot commented with its sentence and line, the query shown
    assert '# story.txt:19 "she leaped into the air"' in plan.yaml
    assert "# query (default): a cat leaps into the air" in plan.yaml
    out = write_plan(plan, planned_path(folder / "story.txt"))
    assert out.name == "story.planned.yaml"
    again = load_story(out, check_images=False)
    assert [s.model_dump() for s in again.shots] == [s.model_dump() for s in story.shots]
    assert again.characters == story.characters


@pytest.mark.parametrize("prose, expected", [
    # 'then' and ';' split; a new subject after 'and' splits
    ("Tabby ran to the left; then she sat down. Bolt waved, and Tabby turned around.",
     ["a <tabby> runs to the left", "a <tabby> sits down", "a <bolt> waves", "a <tabby> turns around"]),
    # a bare verb before 'and' leads into the next: one event, the shot shows where it ends up
    ("Tabby slipped and fell over.", ["a <tabby> falls over"]),
    # a verb with words of its own before 'and' is an action of its own
    ("Tabby spun on the spot and waved.", ["a <tabby> spins on the spot", "a <tabby> waves"]),
    # words before the subject, a light verb, purpose clauses dropped
    ("Suddenly she took a seat to rest.", None),
    # 'they' = the last group; "the two friends" too; both characters in the prompt
    ("Tabby and Bolt hopped. Then the two friends walked away.",
     ["a <tabby> and a <bolt> hop", "a <tabby> and a <bolt> walk away"]),
])
def test_key_plots(tmp_path, prose, expected):
    if expected is None:  # needs a character named first
        prose, expected = "Tabby woke up. " + prose, ["a <tabby> wakes up", "a <tabby> takes a seat"]
    assert [p for _, p in shots(script(tmp_path, prose))] == expected


def test_pronouns_follow_who_they_last_meant(tmp_path):
    # "Bolt chased her" binds 'her' to Tabby, so "She hopped" is Tabby although Bolt was the last subject
    got = shots(script(tmp_path, "Tabby walked to the left. Bolt chased her at full speed. She hopped over a log. "
                                 "The tin man fell over."))
    assert [p.split()[1] for _, p in got] == ["<tabby>", "<bolt>", "<tabby>", "<bolt>"]
    assert got[1][1] == "a <bolt> chases a cat at full speed"  # the object by its class word


def test_places_and_scene_sentences(tmp_path):
    got = shots(script(tmp_path, "It was a cold night on the city street.\nBolt walked toward the camera.\n"
                                 "In the desert, Tabby dashed across the sand.\nShe jumped into the air."))
    assert got == [("bolt-walk", "a <bolt> walks toward the camera on the city street at night"),
                   ("tabby-dash", "on the sand, a <tabby> dashes across"),
                   ("tabby-jump", "a <tabby> jumps into the air on the sand")]


def test_comments_and_sidecar(tmp_path):
    (tmp_path / "story.cast.yaml").write_text(HEADER.strip().strip("-").strip() + "\n")
    path = script(tmp_path, "# a note, not a sentence\nTabby leaped into the air.\n", header="")
    plan = plan_script(path, check_images=False)
    assert [s.prompt for s in plan.story.shots] == ["a <tabby> leaps into the air"]
    assert plan.shots[0]["_line"] == 2


def test_a_script_is_a_story_file_and_edits_change_only_their_shot(tmp_path):
    path = script(tmp_path, "Tabby walked to the left.\nBolt waved hello.\n")
    story = load_story(path, check_images=False)  # planned in memory, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refs", "story.txt"]
    before = {s.id: shot_content_hash(story, s) for s in story.shots}
    path.write_text(HEADER + "Tabby walked to the left.\nBolt waved goodbye.\n")
    edited = load_story(path, check_images=False)
    after = {s.id: shot_content_hash(edited, s) for s in edited.shots}
    assert before["tabby-walk"] == after["tabby-walk"] and before["bolt-wave"] != after["bolt-wave"]


# --- errors: one sentence, file:line, nothing written ---------------------------------------------
ERRORS = [
    ("empty", None, "", ":1: the script is empty"),
    ("no header", "", "Tabby walked.", ":1: the script declares no characters"),
    ("no characters", "---\ntitle: x\n---\n", "Tabby walked.", ":2: the script declares no characters"),
    ("unknown character", None, "Tabby walked to the left.\nThen Pip jumped over her.",
     ":8: 'Pip' is not a declared character; add Pip to the header's characters:"),
    ("unknown subject", None, "Tabby walked to the left.\nPip jumped over the log.", ":8: 'Pip' is not a declared"),
    ("unknown after comma", None, "Suddenly, Max ran off.", ":7: 'Max' is not a declared"),
    ("no event", None, "Tabby walked to the left.\nTabby was very happy.",
     ':8: "Tabby was very happy" has no event a shot can show'),
    ("no character acts", None, "The wind blew through the trees.", "shows no declared character doing it"),
    ("missing image", HEADER.replace("refs/bolt.png", "refs/nobody.png"), "Bolt waved.",
     ":5 characters[1].images[0]: 'refs/nobody.png' does not exist"),
]


@pytest.mark.parametrize("case, header, prose, needle", ERRORS, ids=[e[0] for e in ERRORS])
def test_user_errors_are_one_sentence_and_write_nothing(tmp_path, case, header, prose, needle):
    path = script(tmp_path, prose, header=HEADER if header is None else header)
    if case == "empty":
        path.write_text("")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(StoryError) as e:
        plan_to_file(path, tmp_path / "out.yaml")
    message = str(e.value)
    assert message.startswith(str(path)) and needle in message, message
    assert message.count(". ") == 0 and message.endswith("."), message  # one sentence
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_non_utf8_script_names_its_line_via_cli(tmp_path):
    path = script(tmp_path, "Tabby walked.\n")
    path.write_bytes(path.read_bytes() + "Tabby s\xe9t down.\n".encode("latin-1"))
    env = {**os.environ, "STORY_DATA_ROOT": str(tmp_path / "data"), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "story_pipeline.cli", "plan", str(path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert err == f"error: {path}:8: the file is not UTF-8 text; save it as UTF-8.", err
    assert not planned_path(path).exists() and not (tmp_path / "data").exists()


def test_cli_plan_writes_the_story_file(tmp_path):
    path = script(tmp_path, "Tabby leaped into the air in the snow.\n")
    env = {**os.environ, "STORY_DATA_ROOT": str(tmp_path / "data"), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "story_pipeline.cli", "plan", str(path), "-o",
                           str(tmp_path / "mine.yaml")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tabby-leap" in proc.stdout and "a cat leaps into the air" in proc.stdout
    story = load_story(tmp_path / "mine.yaml", check_images=False)
    assert story.shots[0].prompt == "a <tabby> leaps into the air in the snow"


# --- the language-model planner, against a local server ------------------------------------------
class _Server:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers with ``reply``."""

    def __init__(self):
        self.reply, self.status, self.requests = "", 200, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": outer.reply}}]}
                                  if outer.status == 200 else {"error": "no"}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def lm_server():
    server = _Server()
    yield server
    server.httpd.shutdown()


def _lm_settings(server, **kw):
    return Settings(plan_lm_url=server.url, plan_lm_model="tiny-planner", **kw)


def test_lm_planner_writes_its_validated_plan(tmp_path, lm_server, monkeypatch):
    path = script(tmp_path, "Tabby leaped over Bolt. Then Bolt waved.\n")
    lm_server.reply = json.dumps({"shots": [
        {"source": "Tabby leaped over Bolt", "prompt": "a <tabby> leaps over a robot", "query": "a cat leaping"},
        {"source": "Then Bolt waved", "prompt": "a <bolt> waves in the park"}]})
    monkeypatch.setenv("MY_PLANNER_KEY", "sekrit")
    plan, out = plan_to_file(path, None, use_lm=True, settings=_lm_settings(lm_server, plan_lm_key_env="MY_PLANNER_KEY"))
    route, headers, body = lm_server.requests[-1]
    assert route == "/v1/chat/completions" and body["model"] == "tiny-planner"
    assert headers["Authorization"] == "Bearer sekrit"
    assert "<tabby>, a cat" in body["messages"][1]["content"] and "Tabby leaped over Bolt" in body["messages"][1]["content"]
    story = load_story(out, check_images=False)
    assert [(s.id, s.prompt, s.query) for s in story.shots] == [
        ("tabby-leaps", "a <tabby> leaps over a robot", "a cat leaping"), ("bolt-waves", "a <bolt> waves in the park", None)]
    assert "language-model (tiny-planner) planner" in out.read_text()


@pytest.mark.parametrize("reply, status, needle", [
    ("I think the story has three shots.", 200, "replied with a plan that is not JSON"),
    (json.dumps({"plots": []}), 200, 'without a non-empty "shots" list'),
    (json.dumps({"shots": [{"prompt": "a <fox> runs"}]}), 200, "the unknown token <fox>"),
    (json.dumps({"shots": [{"prompt": "a cat runs"}]}), 200, "no character token"),
    ("", 500, "answered HTTP 500"),
])
def test_lm_planner_bad_replies_are_one_sentence(tmp_path, lm_server, reply, status, needle):
    path = script(tmp_path, "Tabby ran.\n")
    lm_server.reply, lm_server.status = reply, status
    try:
        with pytest.raises(PlannerError) as e:
            plan_to_file(path, None, use_lm=True, settings=_lm_settings(lm_server))
    finally:
        lm_server.status = 200
    assert needle in str(e.value) and str(e.value).startswith(f"The language-model planner at {lm_server.url}")
    assert not planned_path(path).exists()


def test_lm_planner_off_or_unreachable_is_one_sentence(tmp_path):
    path = script(tmp_path, "Tabby ran.\n")
    with pytest.raises(PlannerError, match="No language-model planner is configured; set STORY_PLAN_LM_URL"):
        plan_to_file(path, None, use_lm=True, settings=Settings())
    with pytest.raises(PlannerError, match="cannot be reached"):
        plan_to_file(path, None, use_lm=True, settings=Settings(plan_lm_url="http://127.0.0.1:9/v1",
                                                                 plan_lm_model="m", plan_lm_timeout_s=5))
    assert not planned_path(path).exists()


# --- registry and Dagster -------------------------------------------------------------------------
def test_registry_finds_scripts_not_sidecars(tmp_path):
    from story_pipeline.story.registry import registered_story_files

    settings = Settings(data_root=tmp_path)
    stories = settings.stories_dir
    script(stories / "tale", "Tabby ran.\n")
    script(stories, "Bolt waved.\n", name="short.txt")
    (stories / "short.cast.yaml").write_text("characters: {}\n")
    assert [p.relative_to(stories).as_posix() for p in registered_story_files(settings)] == [
        "short.txt", "tale/story.txt"]


def test_story_plan_asset_is_upstream_of_every_spec_and_writes_the_plan(tmp_path):
    from story_pipeline.assets.stories import build_story_assets, part_keys, run_keys
    from story_pipeline.resources import make_resources

    path = script(tmp_path / "tale", "Tabby ran to the left.\nThen Bolt waved.\n")
    assets = build_story_assets(path)
    plan_key = dg.AssetKey(["tale", "story_plan"])
    by_key = {a.key: a for a in assets}
    assert plan_key in by_key
    specs = [k for k in by_key if k.path[-1].endswith("_spec")]
    assert len(specs) == 2 and all(plan_key in by_key[k].asset_deps[k] for k in specs)
    story = load_story(path, check_images=False)
    keys = part_keys("tale", "shot", "tabby-run")
    assert run_keys(story, keys) == [plan_key] + keys
    assert run_keys(story, part_keys("tale", "character", "tabby")) == part_keys("tale", "character", "tabby")
    root = tmp_path / "data"
    with dg.instance_for_test() as instance:
        r = dg.materialize(assets, selection=[plan_key, keys[0]], instance=instance, resources=make_resources(str(root)))
    assert r.success
    order = [e.asset_key for e in r.get_asset_materialization_events()]
    assert order == [plan_key, keys[0]]  # the plan first
    record = root / "artifacts" / "story_plan" / "tale" / "story.yaml"
    assert "- id: tabby-run" in record.read_text() and "- id: bolt-wave" in record.read_text()
    spec = json.loads((root / "artifacts" / "story_shots" / "tale" / "tabby-run.json").read_text())
    assert spec["prompt"] == "a <tabby> runs to the left" and spec["story_file"] == str(path.resolve())


@pytest.mark.slow
def test_planned_example_retrieves_the_motions_it_names(tmp_path):
    """The example script on a small ToyWorld caption index: every shot's clip shows the plot's motion."""
    from story_pipeline.corpus.index import ClipIndex
    from story_pipeline.corpus.retrieve import retrieve_shot
    from story_pipeline.eval.retrieval import toyworld_clip_rows

    folder = tmp_path / "tabby_tale"
    folder.mkdir()
    shutil.copyfile(EXAMPLE, folder / "story.txt")
    (folder / "refs").mkdir()
    for n in ("tabby", "bolt"):
        for i in range(4):
            (folder / "refs" / f"{n}_{i}.png").write_bytes(b"x")
    story = plan_script(folder / "story.txt", check_images=False).story
    clips, attrs = toyworld_clip_rows(240, seed=0)
    index = ClipIndex(tmp_path / "lancedb")
    index.upsert(clips)
    want = {"tabby-walk": "walk_right", "tabby-leap": "jump", "bolt-roll": "approach", "bolt-wave": "wave",
            "tabby-spin": "spin", "tabby-sit": "sit_down"}
    got = {s.id: attrs[retrieve_shot(index, story, s).chosen["clip_id"]]["motion"] for s in story.shots}
    assert got == want
