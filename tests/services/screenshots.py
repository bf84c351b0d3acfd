"""The pages people look at, rendered in headless Chromium: the Prefect deployment with its schedule, the
MLflow registered model with its `champion` alias, and the results page (`results/index.html`).

The results page alone, from a finished quick run (README command 1) in FOLDER:

    uv run python -m tests.services.screenshots --results FOLDER/results

writes docs/img/results-index.png (the whole page). Look at it before committing it.

The browser test (test_stack.py) saves them to its temporary folder. The README's pictures come from a
quick-profile run instead, refreshed by

    GENBENCH_DATA_DIR=../shared/data uv run python -m tests.services.screenshots

which clones this checkout to a temporary folder (so versions carry the real git commit), starts
`genbench stack up` there, runs the quick profile through the Prefect server into the MLflow server, deploys
it on a nightly schedule, writes docs/img/{prefect-deployment,mlflow-model}.png and stops the stack
(~10-15 minutes on 2 CPU cores). Look at both pictures before committing them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [  # headless as root, and no calls home: this machine's network is closed
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}


def chromium() -> str | None:
    """Debian's chromium, if installed (the README's test command installs it)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def api(env: dict[str, str], path: str, body: dict | None = None) -> dict:
    """Call the Prefect REST API that `env` (a stack's client variables) names, logged in with its auth string."""
    data = None if body is None else json.dumps(body).encode()
    token = base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
    request = urllib.request.Request(f"{env['PREFECT_API_URL']}{path}", data=data,
                                     headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def capture(started: dict, deployment: dict, champion_version: str, out_dir: Path,
            executable: str) -> tuple[Path, Path]:
    """Log in to both UIs of the stack `started` (`stack.up`'s record), render the deployment page (checking its
    name and schedule) and the genbench-ddpm model page (checking the alias row) into out_dir; return the PNGs."""
    from playwright.sync_api import expect, sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    shots = out_dir / "prefect-deployment.png", out_dir / "mlflow-model.png"
    urls, env = {name: service["url"] for name, service in started["services"].items()}, started["env"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            # MLflow asks for HTTP basic credentials (401 + WWW-Authenticate); they go to its origin only
            page = browser.new_page(viewport=VIEWPORT, http_credentials={
                "username": env["MLFLOW_TRACKING_USERNAME"], "password": env["MLFLOW_TRACKING_PASSWORD"],
                "origin": urls["mlflow"]})
            _log_in_to_prefect(page, urls["prefect"], env["PREFECT_API_AUTH_STRING"])
            page.goto(f"{urls['prefect']}/deployments/deployment/{deployment['id']}")
            expect(page.get_by_text(deployment["name"]).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("At 03:00 AM every day")).to_be_visible(timeout=60_000)  # cron 0 3 * * *
            _settle(page)
            page.screenshot(path=shots[0])

            page.goto(f"{urls['mlflow']}/#/models/genbench-ddpm")
            row = page.get_by_role("row").filter(has_text="champion")
            expect(row).to_have_count(1, timeout=60_000)
            expect(row).to_contain_text(f"Version {champion_version}")
            _close_assistant(page)
            _settle(page)
            page.screenshot(path=shots[1])
        finally:
            browser.close()
    return shots


def results_page(results: Path, out: Path, executable: str) -> Path:
    """The whole of results/index.html, offline (file://), checking that its table and every figure rendered."""
    from playwright.sync_api import expect, sync_playwright

    index = (results / "index.html").resolve()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(index.as_uri())
            expect(page.get_by_text("real data (held-out images)").first).to_be_visible(timeout=30_000)
            figures = page.locator("figure img")
            for i in range(figures.count()):
                assert figures.nth(i).evaluate("img => img.complete && img.naturalWidth > 0"), f"figure {i}"
            page.screenshot(path=out, full_page=True)
        finally:
            browser.close()
    return out


def _log_in_to_prefect(page, url: str, auth_string: str) -> None:  # noqa: ANN001 - playwright's Page
    """Log in on the Prefect UI's login page (one password field: the auth string), which keeps it in the
    browser's storage. Its first API call, before the login, leaves an error toast, so the caller loads the
    page it wants afresh afterwards."""
    from playwright.sync_api import expect

    page.goto(f"{url}/login")
    password = page.locator("input[type=password]")
    password.fill(auth_string)
    page.get_by_role("button", name="Login").click()
    expect(password).to_be_hidden(timeout=60_000)  # a refused login stays on the page


def _close_assistant(page) -> None:  # noqa: ANN001 - playwright's Page
    """MLflow 3.17 opens its "MLflow Assistant" chat panel over a third of the page, a moment after the page
    loads; close it (its close button is labelled "Close") when it comes, and go on when it does not."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    close = page.get_by_role("button", name="Close", exact=True).first
    try:
        close.wait_for(state="visible", timeout=10_000)
        close.click()
        page.get_by_text("Ask questions about your experiments").wait_for(state="hidden", timeout=10_000)
    except PlaywrightTimeoutError:
        pass


def _settle(page) -> None:  # noqa: ANN001 - playwright's Page
    """Close whatever a first visit pops up (dialogs, tours) and let transitions finish before the picture.
    Not "networkidle": both UIs poll their servers for as long as the page is open."""
    page.keyboard.press("Escape")
    page.wait_for_timeout(2000)


def main() -> None:
    from genbench import stack

    executable = chromium()
    if executable is None:
        sys.exit("chromium is not installed: apt-get install chromium")
    if sys.argv[1:2] == ["--results"]:
        shot = results_page(Path(sys.argv[2]), REPO / "docs" / "img" / "results-index.png", executable)
        print(f"wrote {shot.relative_to(REPO)}")
        return
    with tempfile.TemporaryDirectory(prefix="genbench-screenshots-") as folder:
        project = Path(folder) / "genbench"
        subprocess.run(["git", "clone", "--quiet", "--local", str(REPO), str(project)], check=True)
        shutil.copy(REPO / "params.yaml", project / "params.yaml")  # the working tree's params, quick profile
        started = stack.up(project)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_"))}
            env |= started["env"]

            def genbench(*args: str) -> None:
                subprocess.run([sys.executable, "-m", "genbench.cli", *args], cwd=project, env=env, check=True)

            genbench("run", "--profile", "quick")
            genbench("deploy", "--name", "nightly", "--cron", "0 3 * * *", "--profile", "quick")
            from mlflow import MlflowClient

            deployment = api(env, "/deployments/name/genbench-pipeline/nightly")
            os.environ.update({key: env[key] for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
            champion = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(
                "genbench-ddpm", "champion")
            shots = capture(started, deployment, champion.version, Path(folder) / "shots", executable)
            for shot in shots:
                shutil.copy(shot, REPO / "docs" / "img" / shot.name)
                print(f"wrote docs/img/{shot.name}")
        finally:
            stack.down(project)


if __name__ == "__main__":
    main()
