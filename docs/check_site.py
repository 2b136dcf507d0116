"""Check the built site in headless Chromium (run by `nox -s docs_browser`).

Serves SITE_DIR over HTTP on 127.0.0.1 and opens every page. A page fails when
it logs a console error, raises a script error, gets an HTTP error for one of
its own files, shows an image that did not render, or links to a page or file
of the site that does not exist. API pages must show the rendered docstring.
Saves a screenshot of the home page. Chromium comes from the system (Debian:
`apt-get install chromium`) or from $CHROMIUM.
"""

import argparse
import functools
import http.server
import os
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag

from playwright.sync_api import sync_playwright

API_PAGES = {"api/layer/": "LuongAttention", "api/function/": "luong_attention"}


def serve(root):
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def find_chromium():
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not path:
        sys.exit("No Chromium found: install it (Debian: apt-get install chromium) or set CHROMIUM")
    return path


def check_page(page, base, url, problems, linked):
    events = []
    page.on("console", lambda msg: msg.type == "error" and events.append(f"console: {msg.text}"))
    page.on("pageerror", lambda exc: events.append(f"script error: {exc}"))
    page.on("requestfailed", lambda r: events.append(f"request failed: {r.url} ({r.failure})"))
    page.on(
        "response",
        lambda r: (
            r.url.startswith(base)
            and r.status >= 400
            and events.append(f"HTTP {r.status}: {r.url}")
        ),
    )
    response = page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    if response is None or response.status != 200:
        events.append(f"page itself: {response and response.status}")
    images = page.eval_on_selector_all(
        "article img",
        "els => els.map(e => [e.currentSrc || e.src, e.complete && e.naturalWidth > 0])",
    )
    events += [f"image did not render: {src}" for src, ok in images if not ok]
    for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
        target = urldefrag(href).url
        if target.startswith(base):
            linked.setdefault(target, url)
    path = url[len(base) :]
    if path in API_PAGES:
        heading = page.inner_text("article h1")
        params = page.locator("article .doc-contents table, article .doc-contents dl").count()
        if API_PAGES[path] not in heading or params == 0:
            events.append(f"API page not rendered (heading {heading!r}, {params} parameter tables)")
    problems += [f"{path or '/'}: {event}" for event in events]
    return len(images)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site_dir", type=Path)
    parser.add_argument("--screenshot-dir", type=Path, default=Path("site-check"))
    args = parser.parse_args()
    pages = sorted(
        p.parent.relative_to(args.site_dir).as_posix() + "/"
        for p in args.site_dir.rglob("index.html")
    )
    pages = ["" if p == "./" else p for p in pages]
    server, base = serve(args.site_dir)
    problems, linked, image_count = [], {}, 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        for path in pages:
            page = context.new_page()
            image_count += check_page(page, base, base + path, problems, linked)
            if path == "":
                args.screenshot_dir.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.screenshot_dir / "home.png"), full_page=True)
            page.close()
        for target, source in sorted(linked.items()):
            status = context.request.get(target).status
            if status != 200:
                problems.append(
                    f"{source[len(base) :] or '/'}: broken link {target} (HTTP {status})"
                )
        browser.close()
    server.shutdown()
    print(
        f"{len(pages)} pages, {image_count} images, {len(linked)} internal links checked; "
        f"screenshot: {args.screenshot_dir / 'home.png'}"
    )
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    if not all(p in pages for p in API_PAGES):
        sys.exit(f"API pages missing from the site: {sorted(set(API_PAGES) - set(pages))}")


if __name__ == "__main__":
    main()
