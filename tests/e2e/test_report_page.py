"""The run's report page, rendered in a real headless Chromium (Debian's chromium, driven by
Playwright, offline): the page of a real quick pipeline run loads over loopback with no failed
request, every image is present and decoded, and the tree, the per-leaf rows and the metrics
tables are there. `treediff report <run_dir>` rebuilds it from the run directory alone."""
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _need_chromium():
    if not Path(CHROMIUM).is_file():
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def serve(root: Path):
    """A static file server on 127.0.0.1 (an ephemeral port) in a thread; returns (server, base url)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_report_page_renders_in_chromium(pipeline_run, tmp_path):
    _need_chromium()
    from playwright.sync_api import sync_playwright

    run_dir, report = pipeline_run
    leaves = report["tree"]["leaves"]
    assert (run_dir / "report.html").is_file()  # written by the pipeline's evaluation
    server, base = serve(run_dir)
    failed, outside = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def route(r):  # offline: anything but loopback is refused and counted
                if r.request.url.startswith(("http://127.0.0.1", "data:")):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()
            page.route("**/*", route)
            page.on("requestfailed", lambda r: failed.append(r.url))
            response = page.goto(f"{base}/report.html", wait_until="load")
            assert response.ok
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
            rows = page.evaluate("Array.from(document.querySelectorAll('.leaf')).map(d => [d.dataset.leaf, d.querySelectorAll('img').length])")
            text = page.inner_text("body")
            has_tree = page.evaluate("!!document.querySelector('#tree-figure') && document.querySelector('#tree-figure').naturalWidth > 0")
            tables = page.evaluate("['clustering', 'generation-metrics', 'phases'].map(id => document.querySelectorAll('#' + id + ' tr').length)")
            shot = Path(os.environ.get("TREEDIFF_SCREENSHOT_DIR", tmp_path)) / "report.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        server.shutdown()
    assert not failed and not outside, (failed, outside)
    assert images and all(ok and w > 0 and h > 0 for _, ok, w, h in images), [i for i in images if not (i[1] and i[2])]
    assert has_tree
    # one row per leaf, each with its real test images, the TreeVAE decodings and the samples of every
    # checkpoint the last evaluation scored (other tests of the session re-run `evaluate`), each with a histogram
    evaluated = json.loads((run_dir / "eval" / "report.json").read_text())["checkpoints"]
    assert sorted(int(leaf) for leaf, _ in rows) == sorted(leaves)
    assert all(n >= 2 * (2 + len(evaluated)) for _, n in rows), (rows, list(evaluated))
    assert tables[0] >= 3 and tables[1] >= 4 and tables[2] >= 3, tables  # the tree + k-means + Ward; FIDs; phases
    assert "k-means(10)" in text and "ceiling" in text and "floor" in text and "routed purity" in text
    assert shot.stat().st_size > 10_000


def test_treediff_report_rebuilds_the_page_from_the_run_directory_alone(pipeline_run, tmp_path):
    run_dir, _ = pipeline_run
    copy = tmp_path / "copied-run"  # as after an rsync: only the run directory
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report.html"))
    code = ("import sys; from jobs.cli import main; rc = main(['report', sys.argv[1]]); "
            "assert not {'ray', 'deepspeed', 'hydra'} & set(sys.modules), 'report imported the runtime'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], env=os.environ | {"CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    page = (copy / "report.html").read_text()
    assert str(copy.resolve()) in page and page.count("data:image/png;base64,") >= 10
    missing = subprocess.run([sys.executable, "-m", "jobs.cli", "report", str(tmp_path / "nowhere")], capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parents[2])
    assert missing.returncode == 2 and "nowhere" in missing.stderr
