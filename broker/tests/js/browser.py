"""Opens the page given as the first argument in headless Chromium and
prints the page's result as one line of JSON.

Chromium is the system's /usr/bin/chromium (or $TERN_CHROMIUM), never a
downloaded one, driven by Python's playwright (PyPI) with a fresh profile
directory. Waits for the page to set window.ternResult; the page's console
goes to stderr. Exits 1 if Chromium is missing or the page gives no result.
Run by broker/tests/websocket_js.rs.
"""

import json
import os
import shutil
import sys
import tempfile

try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sys.exit(
        "Python's playwright is not installed: `pip install playwright` "
        "(scripts/test.sh installs it in ~/.cache/tern/venv and sets TERN_PYTHON)"
    )

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main() -> int:
    page_url = sys.argv[1]
    executable = os.environ.get("TERN_CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(executable):
        print(f"Chromium not found at {executable} (apt-get install chromium)", file=sys.stderr)
        return 1
    profile = tempfile.mkdtemp(prefix="tern-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=ARGS
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.on("console", lambda m: print(f"[page] {m.text}", file=sys.stderr))
                page.on("pageerror", lambda e: print(f"[page error] {e}", file=sys.stderr))
                page.goto(page_url)
                page.wait_for_function("() => window.ternResult !== undefined", timeout=60_000)
                print(json.dumps(page.evaluate("() => window.ternResult"), separators=(",", ":")))
            finally:
                context.close()
    except Exception as e:  # report any failure of the run as the script's result
        print(f"browser run failed: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
