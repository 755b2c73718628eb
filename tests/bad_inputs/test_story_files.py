"""Bad story files and reference images through `story validate` / `story run`.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/bad_inputs/test_story_files.py
"""

import os
from pathlib import Path

import pytest
from PIL import Image

from .builders import (STORY, animated_gif, cmyk_jpeg, corrupt_png, on_shot, png_16bit, png_bytes, png_claiming,
                       saved, story_folder, with_images)
from .harness import Case, check_case, run_exe


def story(text: str | bytes, name: str = "story.yaml", command: str = "validate"):
    """Builder: a story folder holding ``text`` as its story file."""
    def build(folder: Path) -> list[str]:
        path = story_folder(folder / "s", name=name)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return [command, path]
    return build


def image(data: bytes | None, name: str = "refs/x.png"):
    """Builder: the story's character uses ``name``, which holds ``data`` (None: leave it absent)."""
    def build(folder: Path) -> list[str]:
        path = story_folder(folder / "s", text=with_images(name))
        if data is not None:
            (path.parent / name).write_bytes(data)
        return ["validate", path]
    return build


def linked(target, name: str = "refs/link.png", text_paths: str | None = None):
    """Builder: ``name`` is a symlink to ``target(folder)``."""
    def build(folder: Path) -> list[str]:
        path = story_folder(folder / "s", text=with_images(text_paths or name))
        (path.parent / name).symlink_to(target(folder))
        return ["validate", path]
    return build


def outside_png(folder: Path) -> Path:
    (folder / "elsewhere").mkdir(exist_ok=True)
    (folder / "elsewhere" / "secret.png").write_bytes(png_bytes())
    return folder / "elsewhere" / "secret.png"


def outside_dir(folder: Path) -> Path:
    outside_png(folder)
    return folder / "elsewhere"


def loop(folder: Path) -> Path:
    """refs/link.png -> refs/other.png -> refs/link.png"""
    other = folder / "s" / "refs" / "other.png"
    other.symlink_to(folder / "s" / "refs" / "link.png")
    return other


def run_without_index(folder: Path) -> list[str]:
    return ["run", story_folder(folder / "s")]


def story_is_a_folder(folder: Path) -> list[str]:
    (folder / "story.yaml").mkdir()
    return ["validate", folder / "story.yaml"]


def story_symlink_loop(folder: Path) -> list[str]:
    (folder / "story.yaml").symlink_to(folder / "story.yaml")
    return ["validate", folder / "story.yaml"]


def image_is_a_folder(folder: Path) -> list[str]:
    path = story_folder(folder / "s", text=with_images("refs/x.png"))
    (path.parent / "refs" / "x.png").mkdir()
    return ["validate", path]


MANY_SHOTS = "shots:\n" + "".join(f"  - id: s{i}\n    prompt: a cat number {i} jumps\n" for i in range(501))
BIG_STORY = STORY + "".join(f"# padding line {i} {'x' * 100}\n" for i in range(10_000))  # ~1.1 MB
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n"
F = "{folder}/s/story.yaml"  # the story file as the message names it

CASES = [
    # -- YAML syntax --------------------------------------------------------------------------
    Case("yaml-unclosed-bracket", "story", story("title: x\nshots: [\n"), (F, "not valid YAML")),
    Case("yaml-tab-indent", "story", story("title: x\n\tshots: []\n"), (F + ":2", "not valid YAML")),
    Case("yaml-colon-in-text", "story", story(STORY.replace("leaps into the air", "leaps: high")),
         (F + ":8", "not valid YAML")),
    Case("yaml-duplicate-key", "story", story(on_shot("prompt: again")), (F + ":11", "appears twice")),
    Case("yaml-python-object-tag", "story", story("title: !!python/object/apply:os.system ['touch pwned']\n"),
         (F + ":1", "unsupported YAML tag")),
    Case("yaml-billion-laughs", "story", story(LAUGHS), (F + ":2", "aliases")),
    Case("yaml-deep-nesting", "story", story("title: " + "[" * 3000 + "]" * 3000 + "\n"), ("nested too deeply",)),
    Case("yaml-list-at-top", "story", story("- a\n- b\n"), (F + ":1", "not a mapping")),
    Case("yaml-empty-file", "story", story(""), (F, "empty")),
    Case("yaml-only-comments", "story", story("# a story\n# to come\n"), (F, "empty")),
    # -- types, unknown keys, missing things ------------------------------------------------------
    Case("type-frames-word", "story", story(on_shot("frames: sixteen")), (F + ":11", "shots[1].frames", "integer")),
    Case("type-shots-mapping", "story", story("shots: {leap: a cat leaps}\n"), (F + ":1", "shots", "must be a list")),
    Case("type-title-number", "story", story("title: 1984\n" + STORY.split("\n", 1)[1]), (F + ":1", "title")),
    Case("type-images-string", "story", story(STORY.replace("[refs/a.png]", "refs/a.png")),
         (F + ":5", "characters[0].images", "must be a list")),
    Case("unknown-top-key", "story", story("titel: x\n" + STORY.split("\n", 1)[1]), (F + ":1", "did you mean 'title'")),
    Case("unknown-shot-key", "story", story(STORY.replace("prompt: a <tabby> leaps", "promt: a <tabby> leaps")),
         (F + ":8", "shots[0].promt", "did you mean 'prompt'")),
    Case("unknown-character-key", "story", story(STORY.replace("class_word: cat", "class_word: cat\n    colour: red")),
         (F + ":5", "characters[0].colour", "unknown key")),
    Case("missing-character", "story", story(STORY.replace("<tabby> walks", "<fox> walks")),
         (F + ":10", "shots[1].prompt", "<fox>", "no character has that token")),
    Case("missing-class-word", "story", story(STORY.replace("    class_word: cat\n", "")),
         (F + ":3", "characters[0].class_word", "missing")),
    Case("missing-shots", "story", story("title: x\n"), (F + ":1", "'shots' is missing")),
    # -- huge numbers and sizes ----------------------------------------------------------------
    Case("huge-seed", "story", story(on_shot("seed: " + "9" * 40)), ("shots[1].seed", "less than or equal to 4294967295")),
    Case("huge-digits", "story", story(on_shot("seed: " + "9" * 5000)), (F + ":11", "a number of 5000 digits")),
    Case("date-out-of-range", "story", story("title: 2024-13-45\n" + STORY.split("\n", 1)[1]),
         (F + ":1", "'2024-13-45' cannot be read")),
    Case("huge-float-frames", "story", story(on_shot("frames: 1e308")), ("shots[1].frames", "integer")),
    Case("huge-resolution", "story", story(on_shot("resolution: 100000000000000000000")),
         ("shots[1].resolution", "outside the allowed 32-1024")),
    Case("huge-frames", "story", story(on_shot("frames: 100000")), ("shots[1].frames", "100000 frames")),
    Case("nan-tau", "story", story(on_shot("tau: .nan")), ("shots[1].tau", "nan")),
    Case("inf-strength", "story", story(on_shot("strength: .inf")), ("shots[1].strength", "inf")),
    Case("too-many-shots", "story", story(MANY_SHOTS), ("501 shots is above the limit of 500",)),
    Case("story-over-1MiB", "story", story(BIG_STORY), (F, "byte limit")),
    Case("prompt-over-limit", "story", story(STORY.replace("walks to the left", "walks " + "far " * 400)),
         ("shots[1].prompt", "above the limit of 1000")),
    # -- unicode oddities ------------------------------------------------------------------------
    Case("rtl-mark-in-shot-id", "story", story(STORY.replace("id: leap", "id: leap\u200f")),
         (F + ":7", "shots[0].id", "not a valid id")),
    Case("zero-width-in-token", "story", story(STORY.replace("a <tabby> leaps", "a <tab\u200bby> leaps")),
         ("shots[0].prompt", "no character has that token")),
    Case("zero-width-in-key", "story", story(STORY.replace("title:", "ti\u200btle:")), (F + ":1", "did you mean 'title'")),
    Case("nul-byte-in-file", "story", story(STORY.replace("the air", "the\x00air").encode()),
         (F + ":8", "control character #x0000")),
    Case("bell-char-in-file", "story", story(STORY.replace("the air", "the\x07air").encode()), (F + ":8", "#x0007")),
    Case("latin1-bytes", "story", story(STORY.replace("the air", "the caf\xe9").encode("latin-1")),
         (F + ":8", "not UTF-8")),
    Case("utf16-file", "story", story(STORY.encode("utf-16")), (F + ":1", "not UTF-8")),
    Case("nul-in-image-path", "story", story(with_images('"refs/a\\0.png"')), ("characters[0].images[0]", "NUL byte")),
    Case("rtl-override-in-image-path", "story", story(with_images("refs/\u202egnp.a")),
         ("characters[0].images[0]", "does not exist")),
    # -- paths: traversal, absolute, symlinks -------------------------------------------------------
    Case("path-traversal", "story", story(with_images("../../etc/passwd")),
         (F + ":5", "characters[0].images[0]", "'../../etc/passwd' points outside the story folder")),
    Case("path-absolute-outside", "story", story(with_images("/etc/passwd")), ("'/etc/passwd' points outside the story folder",)),
    Case("path-symlink-out", "story", linked(outside_png), ("refs/link.png", "is a symlink to", "outside the story folder")),
    Case("path-symlinked-folder-out", "story", linked(outside_dir, name="refs/out", text_paths="refs/out/secret.png"),
         ("refs/out/secret.png", "outside the story folder")),
    Case("path-symlink-loop", "story", linked(loop), ("refs/link.png", "symlink loop")),
    Case("path-name-too-long", "story", story(with_images("refs/" + "x" * 300 + ".png")), ("File name too long",)),
    Case("story-file-missing", "story", lambda f: ["validate", f / "nope.yaml"], ("{folder}/nope.yaml", "does not exist")),
    Case("story-file-is-folder", "story", story_is_a_folder, ("{folder}/story.yaml", "is not a file")),
    Case("story-file-symlink-loop", "story", story_symlink_loop, ("{folder}/story.yaml", "cannot be read")),
    Case("run-bad-story", "story", story(with_images("../../etc/passwd"), command="run"), ("outside the story folder",)),
    Case("run-without-index", "story", run_without_index, ("{folder}/data/lancedb", "story corpus build")),
    # -- reference images ----------------------------------------------------------------------------
    Case("image-corrupt", "image", image(corrupt_png()), ("refs/x.png", "corrupt")),
    Case("image-zero-bytes", "image", image(b""), ("refs/x.png", "empty file")),
    Case("image-1x1", "image", image(png_bytes(size=(1, 1))), ("refs/x.png", "only 1x1 pixels")),
    Case("image-png-bomb-20000", "image", image(png_claiming(20000, 20000)), ("refs/x.png", "claims more than 50 MP")),
    Case("image-8000-header", "image", image(png_claiming(8000, 8000)), ("refs/x.png", "8000x8000 pixels (64 MP)")),
    Case("image-truncated", "image", image(png_bytes(size=(256, 256))[:-30]), ("refs/x.png", "corrupt")),
    Case("image-text-file", "image", image(b"this is not a picture\n"), ("refs/x.png", "not an image")),
    Case("image-svg", "image", image(b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', "refs/x.svg"),
         ("refs/x.svg", "not an image")),
    Case("image-animated-gif", "image", image(animated_gif(), "refs/x.gif"), ("refs/x.gif", "animated")),
    Case("image-ico", "image", image(saved(Image.new("RGB", (64, 64)), "ICO"), "refs/x.ico"), ("refs/x.ico", "ICO")),
    Case("image-missing", "image", image(None), ("refs/x.png", "does not exist")),
    Case("image-is-folder", "image", image_is_a_folder, ("refs/x.png", "is not a file")),
    Case("image-cmyk-accepted", "image", image(cmyk_jpeg(), "refs/x.jpg"), ("valid",), accepted=True),
    Case("image-16bit-accepted", "image", image(png_16bit()), ("valid",), accepted=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_story_input(case: Case, tmp_path, record_property):
    record_property("kind", case.kind)
    check_case(case, tmp_path)


def test_cases_are_many_and_distinct():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


# The installed command, as a user runs it: exit code 2 and one sentence on stderr.
EXE_CASES = ["yaml-python-object-tag", "path-traversal", "image-png-bomb-20000", "nul-byte-in-file", "huge-digits"]


@pytest.mark.parametrize("case_id", EXE_CASES)
def test_bad_story_input_through_the_installed_command(case_id, tmp_path, record_property):
    case = next(c for c in CASES if c.id == case_id)
    record_property("kind", case.kind)
    check_case(case, tmp_path, runner=run_exe)


def test_python_tag_is_not_executed(tmp_path):
    """The story's !!python/object/apply:os.system tag would create 'pwned' in the working folder."""
    case = next(c for c in CASES if c.id == "yaml-python-object-tag")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        check_case(case, tmp_path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


# Error messages are user text printed through Rich: markup-looking parts of them ("[a-z0-9._-]"
# in a hint, a file named "[/x].yaml") must print as written, not be eaten or crash the CLI.
def test_error_message_keeps_brackets(tmp_path):
    out = check_case(Case("markup", "story", story(STORY.replace("id: leap", "id: Leap")), ("not a valid id",)), tmp_path)
    assert "[a-z0-9._-]" in out.stderr


def test_story_named_like_markup(tmp_path):
    check_case(Case("markup-name", "story", story("title: [\n", name="[red]x.yaml"), ("[red]x.yaml", "not valid YAML")),
               tmp_path)
