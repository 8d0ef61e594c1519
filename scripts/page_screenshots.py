"""Screenshots of the explorer page for the README, at desktop and phone width.

    python scripts/page_screenshots.py [--checkpoint-root checkpoints] [--out docs/figures]

Starts `python -m service` on the checkpoint root (a free loopback port), opens the page in headless Chromium
(Debian's package, driven by Playwright) once it has drawn every panel, and writes explorer-desktop.png
(1280 px wide) and explorer-phone.png (390 px) with their sizes.
"""

import argparse
import shutil
from pathlib import Path

from service.local_server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = {"desktop": {"width": 1280, "height": 1000}, "phone": {"width": 390, "height": 844}}
SETTLED = ("document.body.dataset.ready === '1' && document.body.dataset.pending === '0' "
           "&& !document.querySelector('figure[data-state=loading]')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-root", type=Path, default=ROOT / "checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    try:
        server = LocalServer(args.checkpoint_root).start(timeout=120)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    url = server.url
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            for name, viewport in WIDTHS.items():
                page = browser.new_context(viewport=viewport).new_page()
                page.goto(url)
                page.wait_for_function(SETTLED, timeout=180_000)
                path = args.out / f"explorer-{name}.png"
                page.screenshot(path=str(path))
                print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
                      f"{viewport['width']}×{viewport['height']} px, {path.stat().st_size / 1024:.0f} KiB")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
