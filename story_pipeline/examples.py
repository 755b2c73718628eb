"""Reference images for the example stories in examples/, rendered from ToyWorld (never committed).

    python -m story_pipeline.examples              # writes examples/<story>/refs/<name>_<n>.png

Each example character is one of ToyWorld's NOVEL_CHARACTERS (colours the corpus never shows),
so personalization must learn its look from these images alone. The images a story lists as
``refs/<name>_<n>.png`` are rendered for the character whose token is ``<name>``; the same
name always gives the same pictures (seeded by the character's index in NOVEL_CHARACTERS).
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from story_pipeline.toyworld import NOVEL_CHARACTERS, write_reference_images

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

# token name -> index into NOVEL_CHARACTERS (class word in the story = that character's species)
EXAMPLE_CHARACTERS = {
    "tabby": 0,    # teal/gold striped cat with a scarf
    "bolt": 1,     # gold/teal spotted robot with a hat
    "puddle": 2,   # lavender/teal two-tone duck with a scarf
    "patch": 3,    # lavender/gold spotted dog with a hat
    "bramble": 4,  # teal/lavender two-tone bear
}
REF_NAME = re.compile(r"^refs/([a-z0-9._-]+)_(\d+)\.png$")


def example_story_files(examples_dir: str | Path = EXAMPLES_DIR) -> list[Path]:
    return sorted(Path(examples_dir).glob("*/story.yaml"))


def generate_example_references(examples_dir: str | Path = EXAMPLES_DIR, size: int = 128,
                                force: bool = False) -> list[Path]:
    """Render every refs/<name>_<n>.png that the example stories list -> the paths written.

    Existing files are kept unless ``force``; each file is renamed into place when complete."""
    written = []
    for story_file in example_story_files(examples_dir) + sorted(Path(examples_dir).glob("*/story.txt")):
        for ch in _characters(story_file):
            name = str(ch.get("token", "")).strip("<>")
            if name not in EXAMPLE_CHARACTERS:
                raise ValueError(f"{story_file}: character <{name}> is not an example character; "
                                 f"use one of {', '.join(EXAMPLE_CHARACTERS)}.")
            species = NOVEL_CHARACTERS[EXAMPLE_CHARACTERS[name]].species
            if ch.get("class_word") != species:
                raise ValueError(f"{story_file}: <{name}> is a ToyWorld {species}; set class_word: {species}.")
            wanted = {}
            for raw in ch.get("images") or []:
                m = REF_NAME.match(raw)
                if m is None or m[1] != name:
                    raise ValueError(f"{story_file}: example image '{raw}' must be named refs/{name}_<n>.png.")
                wanted[int(m[2])] = story_file.parent / raw
            missing = {k: p for k, p in wanted.items() if force or not p.exists()}
            if not missing:
                continue
            refs = story_file.parent / "refs"
            refs.mkdir(parents=True, exist_ok=True)
            index = EXAMPLE_CHARACTERS[name]
            with tempfile.TemporaryDirectory(dir=refs, prefix=".render-") as tmp:
                rendered = write_reference_images(NOVEL_CHARACTERS[index], tmp, n=max(wanted) + 1,
                                                  seed=index, size=size)
                for k, target in sorted(missing.items()):
                    os.replace(rendered[k], target)
                    written.append(target)
    return written


def _characters(story_file: Path) -> list[dict]:
    """The characters a story file (or a story script's header) declares, as story-file dicts."""
    from story_pipeline.plan.script import is_script, parse_script

    if is_script(story_file):
        script = parse_script(story_file.read_text(encoding="utf-8"), story_file.resolve(), str(story_file))
        return [{"token": m.token, "class_word": m.class_word, "images": m.images} for m in script.cast]
    return (yaml.safe_load(story_file.read_text()) or {}).get("characters") or []


def copy_examples(dst: str | Path, examples_dir: str | Path = EXAMPLES_DIR) -> Path:
    """Copy the example story files (not their refs) to dst, e.g. for tests that edit them."""
    dst = Path(dst)
    for story_file in example_story_files(examples_dir):
        target = dst / story_file.parent.name / "story.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(story_file, target)
    return dst


if __name__ == "__main__":
    for p in generate_example_references():
        print(p)
