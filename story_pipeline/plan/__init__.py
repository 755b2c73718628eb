"""Step 1 of the paper done for the user: a story script (prose) -> a story file, one shot per key plot.

    story plan examples/tabby_tale/story.txt            # writes examples/tabby_tale/story.planned.yaml
    story run examples/tabby_tale/story.txt             # plans (in memory) and runs

    from story_pipeline.plan import plan_script
    plan = plan_script("story.txt")       # .story (a validated Story), .yaml (the commented file), .plots
    write_plan(plan, "story.yaml")

The offline planner (``plots.py``: sentences and clauses, event verbs from WordNet, place phrases)
is deterministic and cheap, so a script is also a story file: ``load_story("story.txt")`` plans it
in memory, and the Dagster code location, the story sensor and ``story run`` read scripts as they
read YAML. The optional language-model planner (``lm.py``, an OpenAI-compatible endpoint named in
``Settings.plan_lm_url``) is used by ``story plan`` only: its plan is a file the user keeps and runs.
Nothing is written on an error; every problem is a ``StoryError`` of one sentence (file:line).
"""

import os
from dataclasses import dataclass
from pathlib import Path

from story_pipeline.config import StoryLimits, get_settings
from story_pipeline.plan.plots import plan_plots
from story_pipeline.plan.script import is_script, parse_script, read_script_file
from story_pipeline.plan.write import shot_entries, story_data, story_yaml, validate, with_queries
from story_pipeline.story.spec import Story, StoryError

__all__ = ["Plan", "plan_script", "plan_to_file", "story_from_script", "write_plan", "is_script", "planned_path"]


@dataclass
class Plan:
    story: Story
    yaml: str  # the commented story file (image paths relative to the script's folder)
    plots: list  # plots.Plot (offline) or dicts (language model), one per shot
    shots: list  # shot dicts with _line/_source
    planner: str  # "offline" | "lm:<model>"
    script: object  # script.Script
    data: dict

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(script line, shot id, prompt, retrieval query) per shot: what `story plan` and the
        ``story_plan`` asset show."""
        return [(str(s["_line"]), shot.id, shot.prompt, self.story.shot_query(shot))
                for s, shot in zip(self.shots, self.story.shots)]


def planned_path(script: str | os.PathLike) -> Path:
    """Where `story plan` writes by default: ``<stem>.planned.yaml`` beside the script."""
    script = Path(script)
    return script.with_name(script.stem + ".planned.yaml")


def _plan(text: str, path: Path, file: str, limits: StoryLimits, check_images: bool, lm=None) -> Plan:
    script = parse_script(text, path, file)
    if lm is None:
        plots = plan_plots(script)
        shots, planner = shot_entries(plots), "offline"
    else:
        from story_pipeline.plan.lm import lm_shots

        plots = shots = lm_shots(script, lm)
        planner = f"language-model ({lm.model})"
    if len(shots) > limits.max_shots:
        raise StoryError(f"{file}: the script has {len(shots)} key plots, above the limit of {limits.max_shots} "
                         "shots; split it into several stories.", file=file)
    data = story_data(script, shots)
    story = validate(script, data, shots, limits, check_images)
    with_queries(story, shots, data)
    if any("query" in s for s in data["shots"]):
        story = validate(script, data, shots, limits, check_images)
    return Plan(story, story_yaml(script, data, shots, story, planner), plots, shots, planner, script, data)


def plan_script(path: str | os.PathLike, limits: StoryLimits | None = None, check_images: bool = True,
                lm=None) -> Plan:
    """Read and plan a script (``lm``: a ``plan.lm.Endpoint`` to plan with a language model)."""
    limits = limits or get_settings().story_limits
    file, abspath, text = read_script_file(path, limits)
    return _plan(text, abspath, file, limits, check_images, lm)


def story_from_script(text: str, path: Path, file: str, limits: StoryLimits, check_images: bool) -> Story:
    """The story a script plans to (offline planner), for ``load_story`` on a ``.txt`` file."""
    return _plan(text, path, file, limits, check_images).story


def write_plan(plan: Plan, out: str | os.PathLike) -> Path:
    """Write the planned story file to ``out`` atomically, after checking that it loads there as the
    same story (image paths are rewritten relative to ``out``); nothing is written on an error."""
    from story_pipeline.fsutil import atomic_path
    from story_pipeline.story.validation import story_from_yaml

    out = Path(out)
    if out.exists() and out.resolve() == plan.script.path:
        raise StoryError(f"{out}: is the script itself; write the plan to another file (-o story.yaml).", file=str(out))
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise StoryError(f"{out}: a story file ends in .yaml; pass -o with a .yaml name.", file=str(out))
    text = story_yaml(plan.script, plan.data, plan.shots, plan.story, plan.planner, out=out)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
        try:
            loaded = story_from_yaml(text, str(out), out.resolve(), get_settings().story_limits, check_images=False)
        except StoryError as e:
            raise StoryError(f"{out}: the planned story does not load there ({e.problem or e}); write it in the "
                             "script's folder (the default).", file=str(out)) from None
        if [s.model_dump() for s in loaded.shots] != [s.model_dump() for s in plan.story.shots]:
            raise StoryError(f"{out}: the planned story did not read back as planned; report this as a bug.",
                             file=str(out))
    return out


def plan_to_file(script: str | os.PathLike, out: str | os.PathLike | None = None, use_lm: bool = False,
                 settings=None) -> tuple[Plan, Path]:
    """`story plan`: plan ``script`` (offline, or with the configured language model) and write the story
    file to ``out`` (default ``planned_path(script)``)."""
    settings = settings or get_settings()
    lm = None
    if use_lm:
        from story_pipeline.plan.lm import endpoint_from_settings

        lm = endpoint_from_settings(settings)
    plan = plan_script(script, settings.story_limits, lm=lm)
    return plan, write_plan(plan, out or planned_path(script))


def write_plan_record(script: str | os.PathLike, artifacts_dir: str | os.PathLike) -> tuple[Plan, Path]:
    """The ``<story>/story_plan`` asset's work: plan ``script`` offline (as the code location did) and write
    the story file to ``<artifacts>/story_plan/<story>/story.yaml`` atomically. Its image paths stay
    relative to the script's folder, as a comment on its first line says (a record to read and copy,
    not a story to run from there: `story plan` writes that one beside the script)."""
    from story_pipeline.fsutil import atomic_write_text

    plan = plan_script(script, check_images=False)
    out = Path(artifacts_dir) / "story_plan" / plan.story.id / "story.yaml"
    note = f"# Image paths are relative to {plan.script.path.parent} (the script's folder).\n"
    return plan, atomic_write_text(out, note + plan.yaml)
