"""Screenshot pages of the Dagster UI with headless Chromium (a check for people, not a test).

    .venv/bin/python scripts/ui_screenshot.py --out data/outputs/ui  [--page /assets/clip_index]

Starts `dagster dev` on 127.0.0.1 with the project's DAGSTER_HOME, waits for it, takes one PNG per
page, and stops the server. Needs Debian's `chromium` (apt-get install chromium).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAGES = ["/asset-groups/corpus", "/assets/clip_corpus", "/assets/clip_index", "/automation"]


def wait_for(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(1)
    raise SystemExit(f"Dagster UI did not answer at {url} within {seconds:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/outputs/ui")
    ap.add_argument("--port", type=int, default=3137)
    ap.add_argument("--page", action="append", help="UI path to capture (repeatable)")
    ap.add_argument("--size", default="1600,1000")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    home = (ROOT / "data" / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DAGSTER_HOME=str(home))
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
         "-p", str(args.port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        base = f"http://127.0.0.1:{args.port}"
        wait_for(base + "/server_info", 120)
        time.sleep(5)  # the code location loads after the server answers
        for page in args.page or DEFAULT_PAGES:
            png = out / ((page.strip("/").replace("/", "_") or "home") + ".png")
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run(
                    [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", f"--window-size={args.size}", "--virtual-time-budget=20000",
                     f"--screenshot={png.resolve()}", base + page],
                    check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                )
            print(png)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
