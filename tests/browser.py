"""Headless Chromium for the browser tests: the system's Chromium driven by Playwright (never a downloaded browser).

Without playwright or Chromium, or when Chromium cannot start here, the tests that use it skip saying why.
"""

import contextlib
import os
import shutil

import pytest

CHROMIUM = os.environ.get("HEIMDALL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# HEIMDALL_SCREENSHOT_DIR=docs keeps the screenshots the tests take for the README
SCREENSHOT_DIR = os.environ.get("HEIMDALL_SCREENSHOT_DIR")


@contextlib.contextmanager
def chromium_context(profile_dir):
    """A Playwright browser context of Chromium with a fresh profile in profile_dir (pytest.skip if unavailable)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        pytest.skip(f"browser tests need playwright (pip install playwright; .ci/run does): {exc}")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    with sync_playwright() as p:
        try:
            context = p.chromium.launch_persistent_context(
                profile_dir,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1280, "height": 800},
            )
        except Error as exc:
            pytest.skip(f"browser tests: Chromium at {CHROMIUM} does not start here: {exc}")
        yield context
        context.close()
