"""Story files: examples load, every bad input is one sentence with file:line and field, hashes."""

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from story_pipeline.errors import StoryPipelineError
from story_pipeline.examples import EXAMPLE_CHARACTERS, EXAMPLES_DIR, copy_examples, generate_example_references
from story_pipeline.story.spec import StoryError, character_content_hash, motion_query, shot_content_hash
from story_pipeline.config import StoryLimits
from story_pipeline.story.images import load_reference_image
from story_pipeline.story_file import load_story, story_json_schema, write_json_schema
from story_pipeline.toyworld import NOVEL_CHARACTERS, SETTINGS
from story_pipeline.toyworld.captions import MOTION_PHRASES, SETTING_KEYWORDS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """A copy of examples/ with its reference images rendered (the repo copy is never written)."""
    dst = copy_examples(tmp_path_factory.mktemp("examples"))
    generate_example_references(dst)
    return dst


def png_bytes(size=(64, 64), colour=(200, 40, 40), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


STORY = """\
title: Test
defaults:
  frames: 16
  tau: 1.0
characters:
  - token: <tabby>
    class_word: cat
    images: [refs/a.png, refs/b.png]
  - token: <bolt>
    class_word: robot
    images: [refs/c.png]
shots:
  - id: leap
    prompt: a <tabby> leaps into the air in a snowy field
  - id: wave
    prompt: a <bolt> waves hello
    tau: 0.5
  - id: both
    prompt: a <tabby> runs past a <bolt>
"""


def write(folder: Path, text: str, name: str = "story.yaml", images=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if images:
        (folder / "refs").mkdir(exist_ok=True)
        for n, colour in (("a", (200, 40, 40)), ("b", (40, 200, 40)), ("c", (40, 40, 200))):
            (folder / "refs" / f"{n}.png").write_bytes(png_bytes(colour=colour))
    path = folder / name
    path.write_text(text)
    return path


def error_of(path, **kw) -> StoryError:
    with pytest.raises(StoryError) as info:
        load_story(path, **kw)
    return info.value


# --- the examples ---------------------------------------------------------------------------
def test_examples_load_and_use_novel_toyworld_characters_and_motions(examples):
    files = sorted(examples.glob("*/story.yaml"))
    assert len(files) == 3
    novel = {c.species for c in NOVEL_CHARACTERS}
    motion_phrases = [p for pairs in MOTION_PHRASES.values() for pair in pairs for p in pair]
    for f in files:
        story = load_story(f)
        assert story.id == f.parent.name and len(story.shots) == 4
        for c in story.characters:
            assert c.class_word == NOVEL_CHARACTERS[EXAMPLE_CHARACTERS[c.name]].species in novel
            assert all(p.is_file() for p in story.reference_images(c))
        for shot in story.shots:
            query = story.shot_query(shot)
            assert "<" not in query
            assert any(p in query for p in motion_phrases), query
            assert any(k in shot.prompt for s in SETTINGS for k in SETTING_KEYWORDS[s]), shot.prompt
            assert len(story.characters_in(shot)) == 1


def test_example_references_are_rendered_not_committed(examples, tmp_path):
    assert "refs/" in (EXAMPLES_DIR / ".gitignore").read_text().split()
    assert not list(EXAMPLES_DIR.glob("*/refs/*.png")) or subprocess.run(
        ["git", "check-ignore", "-q", str(next(EXAMPLES_DIR.glob("*/refs/*.png")))], cwd=REPO).returncode == 0
    # deterministic: a second render gives the same bytes
    again = copy_examples(tmp_path)
    generate_example_references(again)
    for png in examples.glob("*/refs/*.png"):
        assert (again / png.relative_to(examples)).read_bytes() == png.read_bytes()
    # without the rendered refs the story says which file is missing and where
    bare = copy_examples(tmp_path / "bare")
    err = error_of(bare / "tabby_adventure" / "story.yaml")
    assert err.line == 16 and err.field == "characters[0].images[0]" and "does not exist" in str(err)


# --- bad input: one sentence, right line and field -------------------------------------------
BAD = [
    # (name, text, line, field, words in the message)
    ("malformed", "title: x\nshots:\n  - id: a\n    prompt: a: b\n", 4, None, ["not valid YAML"]),
    ("tabs", "title: x\n\tshots: []\n", 2, None, ["not valid YAML"]),
    ("unknown key", "shots:\n  - id: a\n    promt: hi\n", 3, "shots[0].promt", ["did you mean 'prompt'?"]),
    ("unknown top key", "titel: x\nshots:\n  - id: a\n    prompt: hi\n", 1, "titel", ["did you mean 'title'"]),
    ("tau alias", "defaults:\n  τ: 0.5\nshots:\n  - id: a\n    prompt: hi\n", 2, "defaults.τ",
     ["did you mean 'tau'"]),
    ("no suggestion", "shots:\n  - id: a\n    prompt: hi\n    zzz: 1\n", 4, "shots[0].zzz",
     ["allowed keys here are id, prompt"]),
    ("empty shots", "title: x\nshots: []\n", 2, "shots", ["no shots"]),
    ("no shots key", "title: x\n", 1, "shots", ["'shots' is missing"]),
    ("empty file", "# nothing\n", 1, None, ["empty"]),
    ("not a mapping", "- a\n- b\n", 1, None, ["not a mapping"]),
    ("duplicate id", "shots:\n  - id: a\n    prompt: hi\n  - id: b\n    prompt: ho\n  - id: a\n    prompt: he\n",
     6, "shots[2].id", ["'a' is already used by shots[0] (line 2)"]),
    ("ids one step apart", "shots:\n  - id: a-b\n    prompt: hi\n  - id: a_b\n    prompt: ho\n",
     4, "shots[1].id", ["'a_b' differs from 'a-b' only in '-', '.' or '_'", "rename one of them"]),
    ("unknown token", STORY.replace("runs past a <bolt>", "runs past a <fox>"), 19, "shots[2].prompt",
     ["uses <fox> but no character has that token", "<tabby>, <bolt>"]),
    ("unknown token in query", STORY + "    query: a <fox> runs\n", 20, "shots[2].query", ["uses <fox>"]),
    ("frames over limit", STORY.replace("frames: 16", "frames: 500"), 3, "defaults.frames",
     ["500 frames", "2-64"]),
    ("frames on a shot", STORY + "    frames: 1\n", 20, "shots[2].frames", ["1 frames"]),
    ("resolution over limit", STORY + "    resolution: 4096\n", 20, "shots[2].resolution",
     ["4096x4096", "32-1024"]),
    ("resolution not multiple", STORY + "    resolution: [100, 64]\n", 20, "shots[2].resolution",
     ["multiple of 8", "96x64"]),
    ("resolution shape", STORY + "    resolution: [1, 2, 3]\n", 20, "shots[2].resolution", ["[width, height]"]),
    ("tau range", STORY.replace("tau: 0.5", "tau: 1.5"), 17, "shots[1].tau", ["less than or equal to 1"]),
    ("fractional frames", STORY + "    frames: 16.5\n", 20, "shots[2].frames", ["integer"]),
    ("bad shot id", STORY.replace("id: wave", "id: Wave 2"), 15, "shots[1].id", ["'Wave 2'", "e.g. 'wave-2'"]),
    ("bad token", STORY.replace("token: <bolt>", "token: bolt"), 9, "characters[1].token", ["<name>"]),
    ("duplicate token", STORY.replace("token: <bolt>", "token: <tabby>"), 9, "characters[1].token",
     ["already used by characters[0]"]),
    ("bad method", STORY.replace("class_word: robot", "class_word: robot\n    personalization: dreambooth"),
     11, "characters[1].personalization", ["'dreambooth' is not one of"]),
    ("no images", STORY.replace("images: [refs/c.png]", "images: []"), 11, "characters[1].images",
     ["no reference images"]),
    ("duplicate yaml key", "shots:\n  - id: a\n    prompt: hi\n    prompt: ho\n", 4, "shots[0].prompt",
     ["appears twice (first on line 3)"]),
    ("alias", "d: &d {frames: 8}\nshots:\n  - id: a\n    prompt: hi\n    <<: *d\n", 5, None, ["aliases"]),
    ("yes key", "shots:\n  - id: a\n    prompt: hi\n    on: 3\n", 4, "shots[0]", ["quote it"]),
    ("number title", "title: 1984\nshots:\n  - id: a\n    prompt: hi\n", 1, "title", ["quotes"]),
    ("overrides block", "shots:\n  - id: a\n    prompt: hi\n    overrides: {tau: 0.5}\n", 4, "shots[0].overrides",
     ["directly on the shot"]),
    ("class alias", STORY.replace("class_word: robot", "class: robot"), 10, "characters[1].class",
     ["did you mean 'class_word'"]),
    ("images not a list", STORY.replace("[refs/c.png]", "refs/c.png"), 11, "characters[1].images", ["must be a list"]),
    ("yaml tag", "title: !!python/object:os.system x\nshots: []\n", 1, None, ["unsupported YAML tag"]),
    ("deep nesting", "title: " + "[" * 3000 + "]" * 3000 + "\n", 1, None, ["nested too deeply"]),
    ("story id with dot", "id: my.story\nshots:\n  - id: a\n    prompt: hi\n", 1, "id", ["e.g. 'my-story'"]),
    ("escape ..", STORY.replace("refs/c.png", "../../etc/passwd"), 11, "characters[1].images[0]",
     ["outside the story folder"]),
    ("absolute outside", STORY.replace("refs/c.png", "/etc/passwd"), 11, "characters[1].images[0]",
     ["outside the story folder"]),
    ("missing image", STORY.replace("refs/c.png", "refs/nope.png"), 11, "characters[1].images[0]",
     ["'refs/nope.png' does not exist"]),
    ("listed twice", STORY.replace("refs/b.png", "refs/./a.png"), 8, "characters[0].images[1]", ["listed twice"]),
]


@pytest.mark.parametrize("name,text,line,field,words", BAD, ids=[b[0] for b in BAD])
def test_bad_story_is_one_sentence_with_line_and_field(tmp_path, name, text, line, field, words):
    path = write(tmp_path, text)
    err = error_of(path)
    msg = str(err)
    assert isinstance(err, StoryPipelineError)
    assert msg.startswith(f"{path}:{line}" + (f" {field}:" if field else ":")), msg
    assert (err.line, err.field) == (line, field)
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg and "Traceback" not in msg and "pydantic" not in msg.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refs", "story.yaml"]  # nothing written


def test_typo_reports_the_unknown_key_not_the_missing_one_and_counts_the_rest(tmp_path):
    err = error_of(write(tmp_path, "shots:\n  - id: a\n    promt: hi\n  - id: B\n    prompt: x\n"))
    assert str(err).endswith("did you mean 'prompt'? (1 more problem after this one.)"), str(err)
    assert err.more == 1


def test_story_file_problems(tmp_path):
    assert "does not exist" in str(error_of(tmp_path / "nope.yaml"))
    big = write(tmp_path, "title: x\n" + "#" * 2000 + "\nshots: [{id: a, prompt: hi}]\n")
    assert "above the 1000 byte limit" in str(error_of(big, limits=StoryLimits(max_story_bytes=1000)))
    (tmp_path / "bin.yaml").write_bytes(b"title: x\nshots: \xff\xfe\n")
    err = error_of(tmp_path / "bin.yaml")
    assert err.line == 2 and "UTF-8" in str(err)


def test_story_id_from_id_field_file_name_or_folder(tmp_path):
    shots = "shots:\n  - id: a\n    prompt: hi\n"
    assert load_story(write(tmp_path / "my_tale", shots)).id == "my_tale"  # story.yaml -> folder
    assert load_story(write(tmp_path, shots, name="night-walk.yaml")).id == "night-walk"
    assert load_story(write(tmp_path, "id: chosen\n" + shots, name="x.yaml")).id == "chosen"
    err = error_of(write(tmp_path, shots, name="My Story.yaml"))
    assert "'My Story'" in str(err) and "id: my-story" in str(err)
    assert load_story(write(tmp_path / "t", STORY)).id == "t"


# --- reference images -------------------------------------------------------------------------
def image_story(tmp_path, data: bytes | None, name="refs/x.png") -> Path:
    folder = tmp_path / "s"
    path = write(folder, STORY.replace("refs/c.png", name))
    if data is not None:
        (folder / name).write_bytes(data)
    return path


def huge_png(width=100_000, height=100_000) -> bytes:
    """A valid small PNG whose header claims width x height (nothing may decode it first)."""
    data = bytearray(png_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def saved(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def corrupt_png() -> bytes:
    data = bytearray(png_bytes(colour=(1, 2, 3)))
    i = data.index(b"IDAT") + 6
    data[i:i + 4] = b"\x00\xff\x00\xff"  # CRC no longer matches
    return bytes(data)


def truncated_jpeg() -> bytes:
    rgb = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    return saved(Image.fromarray(rgb), "JPEG")[:1500]


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return saved(frames[0], "GIF", save_all=True, append_images=frames[1:])


IMAGE_CASES = [
    ("text file", b"not an image at all", "not an image Pillow can read"),
    ("empty", b"", "empty file"),
    ("unsupported", saved(Image.new("RGB", (64, 64)), "ICO"), "is a ICO file"),
    ("huge header", huge_png(), "claims more than"),
    ("big header under Pillow's bomb limit", huge_png(9000, 9000), "9000x9000 pixels (81 MP)"),
    ("tiny", png_bytes(size=(8, 8)), "only 8x8 pixels"),
    ("corrupt", corrupt_png(), "corrupt"),
    ("truncated png", png_bytes(size=(256, 256))[:-30], "corrupt"),
    ("truncated jpeg", truncated_jpeg(), "truncated"),
    ("animated gif", animated_gif(), "animated"),
]


@pytest.mark.parametrize("name,data,words", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_bad_reference_image(tmp_path, name, data, words):
    err = error_of(image_story(tmp_path, data))
    assert (err.line, err.field) == (11, "characters[1].images[0]")
    assert ":11 characters[1].images[0]: 'refs/x.png' " in str(err) and words in str(err), str(err)
    # the same check guards the loader the personalization stage uses
    with pytest.raises(StoryError, match="x.png"):
        load_reference_image(tmp_path / "s" / "refs" / "x.png")
    # and check_images=False skips opening images (paths are still checked)
    assert load_story(image_story(tmp_path, data), check_images=False).id == "s"


def test_huge_file_rejected_before_opening(tmp_path):
    err = error_of(image_story(tmp_path, png_bytes()), limits=StoryLimits(max_image_bytes=100))
    size = (tmp_path / "s" / "refs" / "a.png").stat().st_size
    assert f":8 characters[0].images[0]: 'refs/a.png' is {size} bytes, above the 100 bytes limit" in str(err)


def test_symlinks_out_of_the_story_folder_are_rejected(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes())
    path = image_story(tmp_path, None, name="refs/link.png")
    (path.parent / "refs" / "link.png").symlink_to(outside)
    err = error_of(path)
    assert err.line == 11 and f"is a symlink to {outside}, outside the story folder" in str(err)
    # an absolute path inside the folder and a symlink inside it are fine
    (path.parent / "refs" / "inside.png").symlink_to(path.parent / "refs" / "a.png")
    path.write_text(STORY.replace("refs/c.png", str(path.parent / "refs" / "inside.png")))
    assert load_story(path).characters[1].images[0].endswith("inside.png")


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "LA", "P", "L", "RGBA"])
def test_reference_image_modes_become_rgb(tmp_path, mode):
    if mode == "CMYK":
        data = saved(Image.new("CMYK", (64, 64), (0, 0, 0, 0)), "JPEG")  # no ink = white
        expect = (255, 255, 255)
    elif mode == "I;16":
        data = saved(Image.fromarray(np.full((64, 64), 65535, np.uint16)), "PNG")  # 16-bit white
        expect = (255, 255, 255)
    elif mode == "LA":
        data = saved(Image.new("LA", (64, 64), (0, 0)), "PNG")  # fully transparent -> white
        expect = (255, 255, 255)
    elif mode == "RGBA":
        data = saved(Image.new("RGBA", (64, 64), (255, 0, 0, 255)), "PNG")
        expect = (255, 0, 0)
    elif mode == "P":
        im = Image.new("P", (64, 64), 1)
        im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        data = saved(im, "PNG")
        expect = (10, 200, 30)
    else:
        data = saved(Image.new("L", (64, 64), 77), "PNG")
        expect = (77, 77, 77)
    path = image_story(tmp_path, data)
    load_story(path)  # accepted
    im = load_reference_image(path.parent / "refs" / "x.png")
    assert im.mode == "RGB" and im.size == (64, 64)
    assert tuple(np.asarray(im)[10, 10]) == pytest.approx(expect, abs=2)


# --- resolved values ----------------------------------------------------------------------------
def test_query_defaults_to_prompt_with_class_words(tmp_path):
    text = STORY + "    query: <owlish> spinning\n  - id: art\n    prompt: An <tabby> and a <owlish> sit\n"
    text = text.replace("token: <bolt>", "token: <owlish>").replace("class_word: robot", "class_word: owl")
    text = text.replace("a <bolt> waves hello", "a <owlish> waves hello").replace("runs past a <bolt>", "runs")
    story = load_story(write(tmp_path, text))
    assert story.shot_query(story.shot("leap")) == "a cat leaps into the air"  # place phrase dropped
    assert story.shot_query(story.shot("wave")) == "an owl waves hello"  # article follows the class word
    assert story.shot_query(story.shot("both")) == "owl spinning"  # explicit query, tokens replaced too
    assert story.shot_query(story.shot("art")) == "A cat and an owl sit"


@pytest.mark.parametrize("prompt, query", [
    ("a <x> walks toward the camera on a street at night", "a <x> walks toward the camera"),
    ("In the desert, a <x> waves", "a <x> waves"),
    ("a <x> spins in circles in the snow", "a <x> spins in circles"),  # "in circles" is the motion
    ("a <x> leaps into the air among autumn leaves.", "a <x> leaps into the air"),
    ("a <x> turns around on the beach at dawn", "a <x> turns around"),
    ("a <x> on the beach", "a <x>"),
    ("a <x> sits down", "a <x> sits down"),
])
def test_motion_query_drops_place_phrases(prompt, query):
    assert motion_query(prompt) == query


def test_resolved_merges_defaults_and_overrides(tmp_path):
    story = load_story(write(tmp_path, STORY + "    resolution: 96x64\n    seed: 5\n"))
    leap, wave, both = story.shots
    assert story.resolved(leap).tau == 1.0 and story.resolved(wave).tau == 0.5
    r = story.resolved(both)
    assert r.resolution == (96, 64) and r.seed == 5 and r.frames == 16 and r.guidance is None and r.steps is None
    assert story.resolved(leap).resolution == (64, 64) and story.resolved(leap).duration_s == 2.0
    assert [c.token for c in story.characters_in(both)] == ["<tabby>", "<bolt>"]


# --- content hashes -----------------------------------------------------------------------------
def hashes(path) -> dict:
    story = load_story(path)
    return {s.id: shot_content_hash(story, s) for s in story.shots}


def test_shot_hash_changes_when_and_only_when_its_content_changes(tmp_path):
    path = write(tmp_path, STORY)
    base = hashes(path)
    assert len(set(base.values())) == 3

    def after(text):
        path.write_text(text)
        return {k for k, v in hashes(path).items() if base.get(k) != v}

    # prompt / override / query / pinned clip of one shot -> that shot only
    assert after(STORY.replace("waves hello", "waves goodbye")) == {"wave"}
    assert after(STORY.replace("tau: 0.5", "tau: 0.4")) == {"wave"}
    assert after(STORY + "    seed: 9\n") == {"both"}
    assert after(STORY + "    query: a cat runs\n") == {"both"}
    assert after(STORY + "    clip: tw00042\n") == {"both"}
    # a default changes every shot that doesn't override it
    assert after(STORY.replace("  tau: 1.0\n", "  tau: 0.9\n")) == {"leap", "both"}
    # no change in content -> no change in hash
    assert after(STORY.replace("title: Test", "title: Renamed")) == set()
    assert after(STORY + "    tau: 1.0\n") == set()  # an override equal to the default
    assert after(STORY.replace("query", "query") + "  - id: extra\n    prompt: a <bolt> spins\n") == {"extra"}
    reordered = STORY.split("shots:\n")[0] + "shots:\n" + "\n".join(
        reversed(["  - id:" + s for s in STORY.split("shots:\n")[1].split("  - id:")[1:]])) + "\n"
    reordered = reordered.replace("\n\n", "\n")
    assert load_story(write(tmp_path / "r", reordered)).shots[0].id == "both"
    assert hashes(tmp_path / "r" / "story.yaml") == base  # same content in another folder and order
    path.write_text(STORY)

    # a character's images -> the shots that use that character, and its character hash
    story = load_story(path)
    bolt_before = character_content_hash(story, story.character("<bolt>"))
    tabby_before = character_content_hash(story, story.character("<tabby>"))
    (tmp_path / "refs" / "c.png").write_bytes(png_bytes(colour=(9, 9, 9)))
    assert {k for k, v in hashes(path).items() if base[k] != v} == {"wave", "both"}
    story = load_story(path)
    assert character_content_hash(story, story.character("<bolt>")) != bolt_before
    assert character_content_hash(story, story.character("<tabby>")) == tabby_before
    # renaming or reordering the same pictures changes nothing
    (tmp_path / "refs" / "c.png").write_bytes(png_bytes(colour=(40, 40, 200)))
    (tmp_path / "refs" / "a.png").rename(tmp_path / "refs" / "a2.png")
    path.write_text(STORY.replace("[refs/a.png, refs/b.png]", "[refs/b.png, refs/a2.png]"))
    assert hashes(path) == base


# --- JSON Schema --------------------------------------------------------------------------------
def test_json_schema_export(tmp_path):
    schema = story_json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["required"] == ["shots"] and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"id", "title", "defaults", "characters", "shots"}
    shot = schema["$defs"]["Shot"]
    assert shot["additionalProperties"] is False and shot["required"] == ["id", "prompt"]
    assert {"tau", "clip", "query", "resolution"} <= set(shot["properties"])
    assert schema["$defs"]["Character"]["properties"]["token"]["pattern"].startswith("^<")
    out = write_json_schema(tmp_path / "sub" / "story.schema.json")
    assert json.loads(out.read_text()) == schema
    # the copy editors use (examples/story.schema.json) is current
    assert json.loads((EXAMPLES_DIR / "story.schema.json").read_text()) == schema, \
        "regenerate: story schema examples/story.schema.json"


def test_library_does_not_import_dagster():
    code = "import sys, story_pipeline.story, story_pipeline.examples; assert 'dagster' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_runtime_code_imports_neither_dagster_nor_training_or_evaluation_scripts():
    """Every module of the stage packages (and the status module) imported in one interpreter: no
    Dagster, and nothing from train/ or eval/ comes in with them."""
    code = """
import importlib, pkgutil, sys
import story_pipeline
for pkg in ("story", "corpus", "depth", "personalize", "render", "models", "toyworld"):
    p = importlib.import_module("story_pipeline." + pkg)
    for m in pkgutil.iter_modules(p.__path__):
        importlib.import_module(f"story_pipeline.{pkg}.{m.name}")
importlib.import_module("story_pipeline.status")
bad = sorted(m for m in sys.modules if m.split(".")[0] == "dagster" or m.startswith(("story_pipeline.train",
                                                                                      "story_pipeline.eval")))
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_example_in_the_docs_is_a_valid_story(tmp_path):
    doc = (REPO / "docs" / "story_format.md").read_text()
    text = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "refs").mkdir()
    for n in (0, 1):
        (tmp_path / "refs" / f"tabby_{n}.png").write_bytes(png_bytes())
    story = load_story(write(tmp_path, text, images=False))
    assert [s.id for s in story.shots] == ["leap", "spin", "rest"]
    assert story.shot_query(story.shot("spin")) == "a kitten twirling"
    assert story.resolved(story.shot("rest")).frames == 24 and story.shot("rest").clip == "tw00042"


def test_every_personalization_method_can_be_written_in_a_story():
    """The story file accepts exactly the methods personalization implements (plus ``none``)."""
    from story_pipeline.personalize.config import METHODS
    from story_pipeline.story.spec import PERSONALIZATION_METHODS

    assert set(PERSONALIZATION_METHODS) == set(METHODS) | {"none"}


def test_every_bad_setting_is_counted_and_frame_limits_read_alike(tmp_path):
    """Type errors and limits are checked in one pass: the count of further problems includes both, and a
    frame count below the limit reads the same whether it is 0 or 1."""
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "a.png").write_bytes(png_bytes())
    story = tmp_path / "story.yaml"
    head = "characters:\n  - {token: <tabby>, class_word: cat, images: [refs/a.png]}\nshots:\n"
    story.write_text(head + "  - {id: a, prompt: a <tabby> walks, fps: 0, tau: 2}\n"
                            "  - {id: b, prompt: a <tabby> runs, frames: 1}\n")
    with pytest.raises(StoryError) as err:
        load_story(story)
    assert err.value.more == 2 and "(2 more problems after this one.)" in str(err.value)
    messages = []
    for frames in (0, 1):
        story.write_text(head + f"  - {{id: a, prompt: a <tabby> walks, frames: {frames}}}\n")
        with pytest.raises(StoryError) as err:
            load_story(story)
        messages.append(err.value.problem)
    assert messages == [f"{n} frames is outside the allowed 2-64; split a long event into several shots" for n in (0, 1)]
