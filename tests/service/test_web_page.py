"""The web page, driven by headless Chromium against a real server."""

import os
import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI") == "true":  # CI installs it: a missing browser is a failure there
    raise RuntimeError("CI=true but chromium is not installed: the browser tests cannot run")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_page_shows_sampled_faces_and_a_pca_face(live_server, tmp_path):
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
         "--dump-dom", f"{live_server.url}/"],
        capture_output=True, text=True, timeout=120,
    ).stdout
    assert '<option value="gan"' in dom  # the model list came from /models
    for image_id in ("sample", "point", "interp"):
        tag = re.search(rf'<img[^>]*id="{image_id}"[^>]*>', dom).group(0)
        assert 'data-loaded="1"' in tag and 'src="blob:' in tag, tag
    assert re.search(r'<p id="status">\s*</p>', dom), "the page reported an error"
