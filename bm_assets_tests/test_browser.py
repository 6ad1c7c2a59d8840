"""The Dagster UI in a real browser (Debian's Chromium driven by Playwright: clicks, not API calls), on
the first half of the bundled sample: the lineage around the join, one partition launched from the
asset page and run to success by `dagster dev`, and an evaluation asset's metrics table and plot.

Needs /usr/bin/chromium (apt package `chromium`) and the `playwright` package, which scripts/setup.sh
installs. Without them the test is skipped with the reason, except under CI=true, where it fails."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from dagster import DagsterInstance, materialize

from bm_assets.definitions import build_definitions
from bm_assets.settings import REPO_ROOT
from bm_assets_tests.test_ui import dagster_dev  # noqa: F401  (the fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As Chromium runs on these machines: headless, as root, with no network beyond loopback.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"
LAST_DAY = "2017-06-30"


def _browser_or_skip():
    """Playwright's sync API, or a skip naming what is missing (a failure under CI=true)."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the playwright package (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append("Chromium at /usr/bin/chromium (apt-get install chromium)")
    if missing:
        message = f"browser test needs {' and '.join(missing)}; scripts/setup.sh installs both where it can"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


@pytest.fixture
def sample_models(half_year, bm_home, monkeypatch):
    """The half-year sample with every asset but the scores materialized into the instance that
    `dagster dev` then serves (its last day left for the browser to launch)."""
    monkeypatch.setenv("BM_DATASET", str(half_year))
    shutil.copy(REPO_ROOT / "dagster.yaml", bm_home / "dagster" / "dagster.yaml")
    defs = build_definitions(half_year)
    keys = [k for a in defs.assets for k in a.keys if not k.to_user_string().endswith("_scores")]
    tags = {"dagster/asset_partition_range_start": "2017-01-01", "dagster/asset_partition_range_end": "2017-06-29"}
    with DagsterInstance.get() as instance:
        assert materialize(
            list(defs.assets), selection=keys, resources=defs.resources, instance=instance, tags=tags
        ).success
    return half_year


def _ink(img) -> list[int]:
    """[width, height, dark pixels] of a loaded <img>, read back through a canvas."""
    return img.evaluate(
        """e => { const c = document.createElement('canvas'); c.width = e.naturalWidth; c.height = e.naturalHeight;
        const x = c.getContext('2d'); x.drawImage(e, 0, 0); const d = x.getImageData(0, 0, c.width, c.height).data;
        let ink = 0; for (let k = 0; k < d.length; k += 4) { if (d[k] + d[k + 1] + d[k + 2] < 600) ink++; }
        return [c.width, c.height, ink]; }"""
    )


def test_ui_lineage_launch_and_evaluation_in_a_browser(sample_models, dagster_dev, bm_home):  # noqa: F811
    sync_playwright = _browser_or_skip()
    gql, base = dagster_dev, dagster_dev.base_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)  # a fresh profile of its own
        page = browser.new_page(viewport={"width": 1600, "height": 1400})
        page.set_default_timeout(60_000)
        # Dagster's first-visit "Join the Dagster community" dialog: marked as seen in this browser
        # before any page loads (the key the UI itself sets on Skip), and skipped should it still show.
        page.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"), lambda _: page.get_by_role("button", name="Skip").click()
        )
        try:
            # lineage: the join between its inputs and what reads it
            page.goto(f"{base}/assets/events_denormalized?view=lineage")
            for name in (
                "raw_events",
                "client_properties",
                "product_catalog",
                "events_denormalized",
                "behavioral_profiles",
                "temporal_graph",
            ):
                page.get_by_text(name, exact=True).first.wait_for(state="visible")

            # one partition, by clicks: Materialize… on raw_events, its multi-asset confirmed, Latest, Launch
            page.goto(f"{base}/assets/raw_events")
            page.get_by_role("button", name="Materialize…").first.click()
            page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs")
            dialog.get_by_role("button", name="Latest").click()
            dialog.get_by_role("button", name="Launch").last.click()
            dialog.wait_for(state="hidden")

            deadline = time.monotonic() + 240
            while True:
                runs = gql(RUNS)["data"]["runsOrError"]["results"]
                launched = [r for r in runs if {"key": "dagster/partition", "value": LAST_DAY} in r["tags"]]
                if launched and launched[0]["status"] not in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED"):
                    break
                assert time.monotonic() < deadline, f"the launched run did not finish within 240 s: {launched}"
                time.sleep(2)
            assert [r["status"] for r in launched] == ["SUCCESS"]
            page.goto(f"{base}/runs")  # the run list shows it, then its own page says it succeeded
            page.get_by_text(f"partition: {LAST_DAY}").first.wait_for(state="visible")
            page.get_by_role("link", name=launched[0]["runId"][:8]).first.click()
            page.get_by_text("Success", exact=True).first.wait_for(state="visible")
            assert launched[0]["runId"] in page.url

            # the evaluation asset: a metrics table per model and a plot that is not empty
            page.goto(f"{base}/assets/churn_evaluation")
            metrics = page.locator("tr", has=page.get_by_text("metrics", exact=True)).locator("table")
            metrics.wait_for(state="visible")
            text = metrics.inner_text()
            for model in ("finetuned", "scratch", "lightgbm", "prior"):
                assert model in text
            assert "test auroc" in text
            page.locator("tr", has=page.get_by_text("curves", exact=True)).get_by_text("Show Markdown").click()
            plot = page.get_by_role("dialog").locator("img")
            plot.wait_for(state="visible")
            width, height, ink = _ink(plot)
            assert width > 200 and height > 200 and ink > 0.01 * width * height, (width, height, ink)
        except Exception:
            page.screenshot(path=str(bm_home / "browser_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
