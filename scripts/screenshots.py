"""Take the README's screenshots (docs/screenshots/) in real Chromium: `make screenshots`.

Starts the app on a free port with a private redis-server and a throwaway SQLite database,
sends a message that asks the demo model for Markdown, and photographs the desktop (light and
dark) and mobile chat mid-reply (already formatted) and finished, a code block, a shared chat
that a viewer joined mid-reply, a reply of the Analyst agent with its calculator call, and a
chat with an image and a PDF attached, and the operator's console (people, usage).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

from flask_migrate import upgrade
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from chat import create_app  # noqa: E402
from chat.embedded_redis import start_redis_server, stop_redis_server  # noqa: E402
from chat.people.accounts import create_account  # noqa: E402
from helpers.browser import CHROMIUM_ARGS  # noqa: E402  (the flags the browser tests use)

OUT = ROOT / "docs" / "screenshots"
MESSAGE = "How do resumable streams keep a reply safe when I refresh? Show me some Markdown."


def write_chart(path: Path) -> Path:
    """A small bar chart, drawn with Pillow, to attach."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (480, 300), "white")
    draw = ImageDraw.Draw(image)
    for index, height in enumerate((90, 140, 120, 210, 250)):
        left = 50 + index * 85
        draw.rectangle((left, 270 - height, left + 55, 270), fill=(52, 81, 209))
    draw.line((30, 270, 460, 270), fill="black", width=2)
    draw.text((30, 15), "Revenue by quarter", fill="black")
    image.save(path)
    return path


def write_report(folder: Path) -> Path:
    from helpers.files import pdf

    path = folder / "q3-report.pdf"
    path.write_bytes(pdf("Q3 report: revenue grew nine percent on the year, led by the new plans."))
    return path


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="durable-chat-shots-"))
    redis_url, redis_process = start_redis_server(tmp / "redis")
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'shots.sqlite3'}",
            "REDIS_URL": redis_url,
            "SECRET_KEY": "screenshots",
            "DEMO_MODEL_WORDS": 90,
            "DEMO_MODEL_DELAY_MS": 35,
            "OPENAI_API_KEY": None,
            "INSTANCE_PATH": str(tmp),
        }
    )
    with app.app_context():
        upgrade()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for name, options in {
                "desktop": {"viewport": {"width": 1280, "height": 900}, "color_scheme": "light"},
                "desktop-dark": {"viewport": {"width": 1280, "height": 900}, "color_scheme": "dark"},
                "mobile": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "device_scale_factor": 2},
            }.items():
                page = browser.new_context(**options).new_page()
                page.goto(f"{url}/agent/helper")
                page.fill("#message-input", MESSAGE)
                page.keyboard.press("Enter")
                # Polled from here: wait_for_function evaluates a string in the page, which the CSP refuses.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and (
                    page.evaluate("(document.querySelector('.streaming') || {textContent: ''}).textContent.length")
                    <= 350
                ):
                    time.sleep(0.05)
                page.reload()  # resume mid-reply: the page shows what was there and goes on
                time.sleep(0.5)
                page.screenshot(path=str(OUT / f"{name}-streaming.png"))
                if name == "mobile":
                    page.click(".drawer summary")
                    page.screenshot(path=str(OUT / "mobile-menu.png"))
                    page.click(".drawer summary")
                page.wait_for_selector(".message.assistant.status-complete", timeout=30_000)
                page.screenshot(path=str(OUT / f"{name}-finished.png"))
                if name.startswith("desktop"):
                    page.locator(".message.assistant .code-block").first.screenshot(
                        path=str(OUT / f"code-block{name.removeprefix('desktop')}.png")
                    )
            # A shared chat: a viewer (no cookie, a context of their own) joins the owner's reply mid-way.
            owner = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light").new_page()
            owner.goto(f"{url}/agent/helper")
            owner.fill("#message-input", MESSAGE)
            owner.keyboard.press("Enter")
            owner.wait_for_selector(".message.assistant.status-streaming")
            time.sleep(0.3)
            owner.goto(owner.url.rstrip("/") + "/shares")
            owner.click("text=Create a link")
            link = owner.input_value("#new-link")
            viewer = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light").new_page()
            viewer.goto(link)
            time.sleep(1.5)
            viewer.screenshot(path=str(OUT / "shared-streaming.png"))
            # An agent that acts: the Analyst's calculator call, finished, in its place in the reply.
            page = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light").new_page()
            page.goto(f"{url}/agent/analyst")
            page.fill("#message-input", "What is (12 + 30) * 7?")
            page.keyboard.press("Enter")
            page.wait_for_selector(".message.assistant.status-complete", timeout=30_000)
            page.locator(".message.assistant").first.screenshot(path=str(OUT / "tool-call.png"))
            # Attachments: a chart and a PDF, previewed in the composer, then sent and answered.
            page = browser.new_context(viewport={"width": 1280, "height": 1250}, color_scheme="light").new_page()
            page.goto(f"{url}/agent/helper")
            page.set_input_files("#attach-input", [write_chart(tmp / "revenue-chart.png"), write_report(tmp)])
            page.fill("#message-input", "What do the chart and the report say about revenue?")
            page.screenshot(path=str(OUT / "attachments-composer.png"))
            page.keyboard.press("Enter")
            page.wait_for_selector(".message.assistant.status-complete", timeout=30_000)
            page.locator(".message.user").evaluate("(message) => message.scrollIntoView()")
            time.sleep(0.3)
            page.screenshot(path=str(OUT / "attachments.png"))
            # The operator's console: people (one of them managed) and the usage of the replies above.
            with app.app_context():
                create_account("operator@example.com", "correct horse battery", admin=True)
                create_account("ada@example.com", "correct horse battery")
            page = browser.new_context(viewport={"width": 1280, "height": 1000}, color_scheme="light").new_page()
            page.goto(f"{url}/signin")
            page.fill("#email", "operator@example.com")
            page.fill("#password", "correct horse battery")
            page.click("form.auth-form button[type=submit]")
            page.wait_for_selector("#account-link")
            page.goto(f"{url}/admin/?q=ada")
            page.click("details.manage summary")
            page.screenshot(path=str(OUT / "console.png"))
            page.goto(f"{url}/admin/usage")
            page.screenshot(path=str(OUT / "console-usage.png"))
            browser.close()
    finally:
        server.shutdown()
        app.extensions["replies"].shutdown()
        stop_redis_server(redis_process)
    print(f"Screenshots written to {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
