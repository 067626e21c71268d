"""The security policy in real Chromium: a whole chat under the strict CSP, nothing refused."""

from __future__ import annotations

import pytest

from helpers.browser import wait_finished, wait_for_text

pytestmark = pytest.mark.browser

REPORT_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', function (e) {
  window.reportViolation(e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') + ' at ' + e.sourceFile + ':' + e.lineNumber);
});
"""


def test_the_whole_chat_runs_under_the_csp_without_violations_or_console_errors(live_server, browser_context):
    server = live_server(DEMO_MODEL_WORDS=300, DEMO_MODEL_DELAY_MS=30)
    context = browser_context()
    violations: list[str] = []
    errors: list[str] = []
    context.expose_function("reportViolation", lambda text: violations.append(text))
    context.add_init_script(REPORT_VIOLATIONS)
    page = context.new_page()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{server.url}/")
    page.click("a[href='/agent/helper']")
    page.fill("#message-input", "Walk the whole chat")
    page.keyboard.press("Enter")  # send and stream
    page.wait_for_selector(".message.assistant.status-streaming")
    wait_for_text(page, 40)
    page.reload()  # reload mid-reply: the stream resumes
    page.wait_for_selector(".message.assistant.status-streaming")
    wait_for_text(page, 80)
    page.click("#composer button.stop")  # stop
    page.wait_for_selector(".message.assistant.status-cancelled")
    page.click(".message.assistant form.regenerate button")  # try again
    page.wait_for_selector(".message.assistant.status-streaming")
    wait_finished(page, timeout=30_000)
    page.goto(f"{server.url}/signup")  # and the account pages
    page.fill("#email", "csp@example.com")
    page.fill("#password", "a long enough password")
    page.click("form.auth-form button[type=submit]")
    page.wait_for_selector("#account-link")
    page.click("#account-link")
    page.wait_for_selector("#account-email")

    assert violations == [], violations
    assert errors == [], errors
