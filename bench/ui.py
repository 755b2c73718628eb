"""The Dagster UI path against `story run`, as a person uses it: one run, headless Chromium clicking.

    .venv/bin/pip install -e '.[bench]'     # Playwright (drives Debian's chromium: apt-get install chromium)
    .venv/bin/python bench/ui.py            # ~30 min on 2 cores; --cli-seconds S reuses a `story run` time

On temporary data roots, each with the same ToyWorld corpus (`story corpus build`) and the example
story `tabby_adventure` (its reference images rendered by `story examples`):
  story run   `story run story.yaml`, fresh (empty memos, empty instance), as a process
  fresh (UI)  `story ui` started; the story sensor asks for the story's run on its first tick (what
              "Materialize all" asks for on a fresh story); from the UI answering until `story_video`
              is materialized
  cached (UI) "Materialize all" clicked on the story's asset group (one run); until `story_video` is
              materialized again (every step a memo hit)
  edit (UI)   one shot's prompt edited in the story file; until the sensor's run has re-rendered it
              and `story_video` is materialized again
Goals: fresh <= 1.2x `story run`; cached <= 20 s; edit <= 0.35x fresh. Also printed: runs launched
and the sum of their durations (the rest of the wall time is Dagster's scheduling: the sensor's tick
interval, the run queue, run start-up). Screenshots go to --out.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
STORY = "tabby_adventure"
EDIT = ("a <tabby> spins in circles in the snow", "a <tabby> hops along on the beach")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def story(args: list[str], data: Path, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, STORY_DATA_ROOT=str(data))
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([str(BIN / "story"), *args], env=env, check=True, **kw)


def prepare(data: Path, clips: int, examples: Path) -> Path:
    """A data root with the corpus indexed and the story registered (under <data>/stories/)."""
    story(["corpus", "build", "--toyworld-clips", str(clips)], data, stdout=subprocess.DEVNULL)
    dest = data / "stories" / STORY
    shutil.copytree(examples / STORY, dest)
    return dest / "story.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """The UI's Dagster instance, read from this process (sqlite storage under the data root)."""

    def __init__(self, home: Path):
        os.environ["DAGSTER_HOME"] = str(home)
        import dagster as dg

        self.instance = dg.DagsterInstance.get()
        self.video = dg.AssetKey([STORY, "story_video"])

    def video_id(self) -> float:
        """When story_video was last materialized (-1: never)."""
        event = self.instance.get_latest_materialization_event(self.video)
        return event.timestamp if event is not None else -1.0

    def wait_video_after(self, stamp: float, timeout: float) -> float:
        """Until story_video is newer than ``stamp`` and no run of the story is queued or running."""
        from story_pipeline.sensors.stories import stories_in_progress

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.video_id() > stamp and STORY not in stories_in_progress(self.instance, backfills=False):
                return time.monotonic()
            time.sleep(0.5)
        raise SystemExit(f"story_video was not materialized within {timeout:.0f} s")

    def runs_since(self, t0: float) -> tuple[int, float, int]:
        """(runs created after wall time t0, sum of their durations in s, failed ones)."""
        from dagster import DagsterRunStatus, RunsFilter

        records = self.instance.get_run_records(RunsFilter(created_after=_utc(t0)))
        seconds = sum((r.end_time or time.time()) - (r.start_time or r.create_timestamp.timestamp())
                      for r in records if r.start_time)
        failed = sum(r.dagster_run.status == DagsterRunStatus.FAILURE for r in records)
        return len(records), seconds, failed


def _utc(t: float):
    from datetime import datetime

    return datetime.fromtimestamp(t, tz=UTC)


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"The UI did not answer at {url} within {timeout:.0f} s")


def shoot(page, url: str, png: Path, settle: float = 4.0) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    time.sleep(settle)
    page.screenshot(path=str(png), full_page=False)
    print(f"  screenshot {png}")


def click_materialize_all(page, base: str, group: str) -> None:
    """The story's asset group page: "Materialize all" (one run; a launch dialog, if one opens, confirmed)."""
    page.goto(f"{base}/locations/story_pipeline/asset-groups/{group}")
    page.locator("button", has_text="Materialize all").first.click(timeout=120_000)
    launch = page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^Launch"))
    try:
        launch.click(timeout=5_000)
    except Exception:  # noqa: BLE001 - unpartitioned assets launch their run without a dialog
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=120, help="ToyWorld corpus clips")
    ap.add_argument("--port", type=int, default=0, help="UI port (default: a free one)")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "outputs" / "bench_ui", help="screenshots")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each UI figure")
    ap.add_argument("--cli-seconds", type=float, help="skip `story run`; use this fresh time instead")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("Playwright is needed: .venv/bin/pip install -e '.[bench]'") from None
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        examples = _examples(work / "examples")

        cli = args.cli_seconds
        if cli is None:
            print("story run (fresh) …", flush=True)
            cli_file = prepare(work / "cli", args.clips, examples)
            t0 = time.monotonic()
            story(["run", str(cli_file)], work / "cli", stdout=subprocess.DEVNULL)
            cli = time.monotonic() - t0

        print("story ui …", flush=True)
        data = work / "ui"
        story_file = prepare(data, args.clips, examples)
        port = args.port or free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, STORY_DATA_ROOT=str(data))
        env.pop("DAGSTER_HOME", None)
        with open(work / "ui.log", "w") as log:  # the server's output (the child keeps its own handle)
            server = subprocess.Popen([str(BIN / "story"), "ui", "--port", str(port)], env=env, cwd=work,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(base + "/server_info", 180)
            inst = Instance(data / "dagster_home")
            t_fresh = time.time()
            t0 = time.monotonic()
            fresh = inst.wait_video_after(-1, args.timeout) - t0
            fresh_runs = inst.runs_since(t_fresh)
            print(f"  fresh: {fresh:.1f} s", flush=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                group = "story_" + STORY
                shoot(page, f"{base}/locations/story_pipeline/asset-groups/{group}", args.out / "1_fresh_lineage.png")

                before, t_cached = inst.video_id(), time.time()
                t0 = time.monotonic()
                click_materialize_all(page, base, group)
                cached = inst.wait_video_after(before, args.timeout) - t0
                cached_runs = inst.runs_since(t_cached)
                print(f"  cached: {cached:.1f} s", flush=True)
                shoot(page, f"{base}/runs", args.out / "2_cached_runs.png")

                before, t_edit = inst.video_id(), time.time()
                story_file.write_text(story_file.read_text().replace(*EDIT))
                t0 = time.monotonic()
                edit = inst.wait_video_after(before, args.timeout) - t0
                edit_runs = inst.runs_since(t_edit)
                print(f"  edit: {edit:.1f} s", flush=True)
                shoot(page, f"{base}/locations/story_pipeline/asset-groups/{group}", args.out / "3_edit_lineage.png")
                shoot(page, f"{base}/assets/{STORY}/shots/spin_render?view=checks", args.out / "4_checks.png")
                shoot(page, f"{base}/assets/{STORY}/story_video", args.out / "5_video.png")
                browser.close()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)

    print(f"\nThe Dagster UI vs `story run` ({args.clips}-clip ToyWorld corpus, story {STORY}, one run)")
    print(f"{'path':<34}| {'seconds':>8} | {'runs':>4} | {'run s':>7} | {'ratio':>6} | goal")
    print(f"{'story run (fresh)':<34}| {cli:8.1f} | {'':>4} | {'':>7} | {1:6.2f} |")
    rows = [("UI fresh (sensor run)", fresh, fresh_runs, fresh / cli, "<= 1.20 x story run", fresh / cli <= 1.2),
            ("UI cached (Materialize all)", cached, cached_runs, cached / cli, "<= 20 s", cached <= 20),
            ("UI edit one shot (sensor)", edit, edit_runs, edit / fresh, "<= 0.35 x UI fresh", edit / fresh <= 0.35)]
    for name, sec, (n, run_s, failed), ratio, goal, met in rows:
        flag = f" ({failed} failed)" if failed else ""
        print(f"{name:<34}| {sec:8.1f} | {n:4d} | {run_s:7.1f} | {ratio:6.2f} | {goal} {'MET' if met else 'MISSED'}"
              f"{flag}")


def _examples(dst: Path) -> Path:
    """The example stories copied to ``dst``, with their reference images rendered there."""
    from story_pipeline.examples import copy_examples, generate_example_references

    copy_examples(dst)
    generate_example_references(dst)
    return dst


if __name__ == "__main__":
    main()
