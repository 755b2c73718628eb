"""The `story` command: the same asset graph as the Dagster UI, run in-process.

    story demo                      build the ToyWorld corpus + index, run sample retrievals
    story corpus build              (re)index the corpus folder (only new/changed clips embedded)
    story search "a cat jumps" -k 5
    story toyworld contact-sheet out.png
    story examples                  render the example stories' reference images
    story validate examples/tabby_adventure/story.yaml
    story plan examples/tabby_tale/story.txt   a story script (prose) -> a story file, one shot per key plot
    story schema story.schema.json  JSON Schema of story files, for editors
    story ui                        Dagster UI on 127.0.0.1
"""

import contextlib
import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from story_pipeline.config import Settings
from story_pipeline.errors import StoryPipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Animate-A-Story: storytelling videos from retrieved motion.")
corpus_app = typer.Typer(no_args_is_help=True, help="The clip corpus and its index.")
toyworld_app = typer.Typer(no_args_is_help=True, help="The embedded ToyWorld.")
app.add_typer(corpus_app, name="corpus")
app.add_typer(toyworld_app, name="toyworld")

console = Console()
err_console = Console(stderr=True)

DEMO_QUERIES = [
    "a kitten leaping into the air",
    "a robot walking to the left",
    "a dog running fast",
    "a bird coming toward the camera",
]


def _settings() -> Settings:
    return Settings()


def fail(message: str, code: int = 2):
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors():
    """Turn errors a user can cause into one sentence and a non-zero exit, never a traceback."""
    try:
        yield
    except StoryPipelineError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; nothing half-written was kept.", code=130)
    except BaseException as e:
        name, module = type(e).__name__, type(e).__module__
        if name == "Failure" and module.startswith("dagster"):  # a step's one sentence (user error)
            fail(e.description or str(e))
        if name == "DagsterExecutionInterruptedError":  # Ctrl-C while a Dagster step ran
            fail("interrupted; nothing half-written was kept (the run is marked failed in the UI).", code=130)
        raise


@contextlib.contextmanager
def rich_progress():
    from story_pipeline import progress as progress_hook

    with Progress(
        TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=False,
    ) as bar:
        tasks = {}

        def reporter(stage, done, total):
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        progress_hook.set_reporter(reporter)
        try:
            yield
        finally:
            progress_hook.set_reporter(None)


def _build_corpus(toyworld_clips: int | None, seed: int):
    from story_pipeline.cli.run import materialize, node_metadata

    with rich_progress():
        result = materialize(
            ["clip_corpus", "clip_index"],
            run_config={"ops": {"clip_corpus": {"config": {
                "toyworld_seed": seed, **({} if toyworld_clips is None else {"toyworld_clips": toyworld_clips})}}}},
        )
    c, i = (node_metadata(result, name) for name in ("clip_corpus", "clip_index"))
    console.print(
        f"Corpus: [bold]{c['clips']}[/] clips from {c['videos']} videos, {c['rejected']} rejected. "
        f"Index: {i['rows']} rows (version {i['table_version']}), "
        f"{i['captions_embedded']} captions embedded this run."
    )


def _print_hits(query: str, hits) -> None:
    table = Table(title=f"“{escape(query)}”", title_justify="left", show_lines=False)
    for col in ("#", "clip", "score", "span (frames)", "seconds", "caption"):
        # a clip id is copied into a story's `clip:` field: never cut, whatever the width (pipes, narrow terminals)
        table.add_column(col, no_wrap=col == "clip", min_width=max((len(h.clip_id) for h in hits), default=4)
                         if col == "clip" else None)
    for n, h in enumerate(hits, 1):
        table.add_row(str(n), h.clip_id, f"{h.score:.3f}", f"{h.start_frame}–{h.end_frame}",
                      f"{h.duration_s:.1f}", escape(h.caption))
    console.print(table)


def _open_index(settings: Settings):
    from story_pipeline.corpus.index import ClipIndex

    return ClipIndex(str(settings.lancedb_dir), ann_threshold=settings.ann_threshold)


@app.command()
def demo(
    clips: int = typer.Option(300, help="ToyWorld clips in the demo corpus"),
    seed: int = typer.Option(0, help="ToyWorld seed"),
):
    """Run the demo on the embedded ToyWorld: corpus, index, sample retrievals, then the example
    story end to end: personalize its character, retrieve, extract depth, render, assemble."""
    with user_errors():
        timings = run_demo(clips, seed)
        table = Table(title="Time by stage", title_justify="left")
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for stage, sec in timings.items():
            table.add_row(stage, f"{sec:.1f}")
        console.print(table)
        console.print(f"Done in {sum(timings.values()):.0f} s. Browse the assets: [bold]story ui[/] "
                      "(then open http://127.0.0.1:3000); personalization runs: [bold]story mlflow-ui[/] "
                      "(http://127.0.0.1:5000).")


def run_demo(clips: int = 300, seed: int = 0, shots: list | None = None) -> dict[str, float]:
    """The demo's work; -> seconds per stage (what `story demo` and bench/demo.py print). ``shots``
    receives the story run's rows, one per shot (``generator_calls``: renders, retries included)."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _build_corpus(clips, seed)
    timings["corpus + index"] = time.perf_counter() - t
    t = time.perf_counter()
    from story_pipeline.corpus.search import search

    index = _open_index(_settings())
    for q in DEMO_QUERIES:
        _print_hits(q, search(index, q, k=3))
    from story_pipeline.examples import EXAMPLES_DIR, generate_example_references

    generate_example_references()
    timings["sample searches + reference images"] = time.perf_counter() - t
    rows = _run_story(EXAMPLES_DIR / "tabby_adventure" / "story.yaml", timings)
    if shots is not None:
        shots.extend(rows)
    return timings


@corpus_app.command("build")
def corpus_build(
    toyworld_clips: int = typer.Option(
        None, help="ToyWorld demo clips: N renders N, 0 removes them; unset keeps what is there"
    ),
    seed: int = typer.Option(0, help="ToyWorld seed"),
):
    """Ingest the corpus folder and upsert the clip index (only new/changed clips are embedded)."""
    with user_errors():
        _build_corpus(toyworld_clips, seed)


@corpus_app.command("add")
def corpus_add(
    folder: Path = typer.Argument(..., help="a folder of videos with captions (manifest.csv/.parquet or sidecar .txt)"),
    name: str = typer.Option(None, help="name of the copy under the corpus folder (default: the folder's name)"),
    reindex: bool = typer.Option(True, help="reindex right away (otherwise the sensor or `story corpus build` will)"),
):
    """Copy a folder of captioned videos into the corpus and reindex (only its clips are embedded)."""
    with user_errors():
        from story_pipeline.corpus.build import add_to_corpus

        dest = add_to_corpus(_settings(), folder, name)
        console.print(f"Copied {folder} to {dest}.")
        if reindex:
            _build_corpus(None, 0)


@app.command("search")
def search_cmd(
    query: str,
    k: int = typer.Option(5, "-k", help="how many clips"),
    min_duration: float = typer.Option(None, help="only clips at least this many seconds long"),
):
    """Search the clip index (hybrid: caption embedding + full text, reranked)."""
    with user_errors():
        from story_pipeline.corpus.search import search

        _print_hits(query, search(_open_index(_settings()), query, k=k, min_duration=min_duration))


@toyworld_app.command("contact-sheet")
def contact_sheet_cmd(
    out: Path = typer.Argument(Path("data/outputs/toyworld_contact_sheet.png")),
    n: int = 16,
    seed: int = 0,
):
    """Write a PNG of random ToyWorld clips' middle frames beside their depth."""
    with user_errors():
        from story_pipeline.toyworld.contact_sheet import contact_sheet

        path = contact_sheet(n=n, seed=seed, out_png=out)
        console.print(f"Wrote {path}")


@app.command()
def validate(file: Path = typer.Argument(..., help="story YAML file (or story script, .txt)")):
    """Check a story file (fields, characters, reference images) and show its shots."""
    with user_errors():
        from story_pipeline.story_file import load_story
        from story_pipeline.story.spec import shot_content_hash

        story = load_story(file)
        table = Table(title=escape(f"{story.title or story.id} ({file})"), title_justify="left")
        for col in ("shot", "prompt", "retrieval query", "frames@fps", "tau", "hash"):
            table.add_column(col)
        for shot in story.shots:
            r = story.resolved(shot)
            table.add_row(shot.id, shot.prompt, story.shot_query(shot), f"{r.frames}@{r.fps}", f"{r.tau:g}",
                          shot_content_hash(story, shot)[:10])
        console.print(table)
        console.print(f"{len(story.characters)} characters, {len(story.shots)} shots: valid.")


@app.command()
def plan(script: Path = typer.Argument(..., help="story script: prose with a character header (.txt)"),
         out: Path = typer.Option(None, "-o", "--out", help="story file to write (default: <script>.planned.yaml)"),
         lm: bool = typer.Option(False, "--lm", help="plan with the language model of STORY_PLAN_LM_URL")):
    """Split a story script into shots (one per key plot) and write them as a story file you can edit."""
    with user_errors():
        from story_pipeline.plan import plan_to_file

        plan, path = plan_to_file(script, out, lm)
        table = Table(title=escape(f"{plan.story.title or plan.story.id} ({script}, {plan.planner} planner)"),
                      title_justify="left")
        for col in ("line", "shot", "prompt", "retrieval query"):
            table.add_column(col)
        for row in plan.rows():
            table.add_row(*row)
        console.print(table)
        console.print(f"Wrote {path} ({len(plan.story.shots)} shots); run it with `story run {path}`.")


def _run_story(file: Path, timings: dict | None = None) -> list[dict]:
    from story_pipeline import progress as progress_hook
    from story_pipeline.cli.run import run_story

    with rich_progress():
        return run_story(file, console, progress_hook.report, timings)


@app.command()
def run(file: Path = typer.Argument(..., help="story YAML file, or a story script (.txt): planned, then run")):
    """Materialize a story's shot assets (retrieval, depth, render) on the persistent Dagster instance.

    Unchanged shots are cache hits: only edited shots recompute. The story is registered so its
    assets also show in `story ui`."""
    with user_errors():
        _run_story(file)


@app.command()
def schema(out: Path = typer.Argument(Path("story.schema.json"), help="where to write the JSON Schema")):
    """Write the JSON Schema of story files (for editor completion and checking)."""
    with user_errors():
        from story_pipeline.story_file import write_json_schema

        console.print(f"Wrote {write_json_schema(out)}")


@app.command()
def examples(force: bool = typer.Option(False, help="re-render images that already exist")):
    """Render the reference images the example stories use (ToyWorld novel characters)."""
    with user_errors():
        from story_pipeline.examples import generate_example_references

        paths = generate_example_references(force=force)
        console.print(f"{len(paths)} reference images under examples/*/refs/.")


@app.command()
def ui(
    port: int = typer.Option(3000, help="port on 127.0.0.1"),
    host: str = typer.Option("127.0.0.1", help="bind address (keep 127.0.0.1 unless you know why)"),
):
    """Start the Dagster UI (assets, runs, sensors, schedules) on 127.0.0.1 with `dg dev`."""
    from story_pipeline.cli import servers
    from story_pipeline.dagster_home import ensure_dagster_home

    with user_errors():
        home = ensure_dagster_home(_settings())
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, DAGSTER_HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd, cwd = dg_dev_command(host, port)
    console.print(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={home}); Ctrl-C stops it.")
    raise typer.Exit(servers.serve(cmd, env=env, cwd=cwd))


def dg_dev_command(host: str, port: int) -> tuple[list[str], str | None]:
    """`dg dev` for this project: from the repository root ([tool.dg] in pyproject.toml), else by module."""
    dg = str(Path(sys.executable).parent / "dg")
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and "[tool.dg]" in (root / "pyproject.toml").read_text():
        return [dg, "dev", "-h", host, "-p", str(port)], str(root)
    return [dg, "dev", "-h", host, "-p", str(port), "-m", "story_pipeline.definitions"], None


def mlflow_command(settings: Settings, host: str, port: int) -> list[str]:
    """The MLflow tracking server over the project's sqlite store and artifact folder."""
    d = settings.mlflow_dir
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}", "--default-artifact-root", str(d / "artifacts")]


@app.command("mlflow-ui")
def mlflow_ui(
    port: int = typer.Option(None, help="port on 127.0.0.1 (default: the port of STORY_MLFLOW_UI, 5000)"),
    host: str = typer.Option("127.0.0.1", help="bind address (keep 127.0.0.1 unless you know why)"),
):
    """Start the MLflow UI (personalization runs: params, loss curves, sample GIFs) on 127.0.0.1.

    Artifact locations are pointed at this data root first, so a moved or copied data root shows
    its own files; the Dagster run links (STORY_MLFLOW_UI) name the same address."""
    from urllib.parse import urlparse

    from story_pipeline.personalize.tracking import reroot_artifacts

    with user_errors():
        settings = _settings()
    port = port or urlparse(settings.mlflow_ui).port or 5000
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    if (settings.mlflow_dir / "mlflow.db").exists():
        reroot_artifacts(settings.mlflow_dir / "mlflow.db", settings.mlflow_dir / "artifacts")
    # one worker and no job runner: the defaults start 9 processes and ~2.4 GB on this 2-core box
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    console.print(f"MLflow UI on http://{host}:{port} (store {settings.mlflow_dir}); Ctrl-C stops it.")
    from story_pipeline.cli import servers

    raise typer.Exit(servers.serve(mlflow_command(settings, host, port), env=env))


if __name__ == "__main__":
    app()
