"""axe-core (from npm, tests/axe/package-lock.json) run inside a page: its accessibility faults."""

from __future__ import annotations

import subprocess
from functools import cache

from .apps import ROOT

AXE_DIR = ROOT / "tests" / "axe"
AXE_SCRIPT = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


@cache
def axe_source() -> str:
    """The script, installed with `npm ci` on first use (as the benchmark installs its peer)."""
    if not AXE_SCRIPT.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=AXE_DIR, check=True)
    return AXE_SCRIPT.read_text(encoding="utf-8")


def violations(page) -> list[str]:
    """Every WCAG A/AA fault axe finds in the page as it is now, one line each (rule, impact,
    where). Evaluated through the browser's debugging protocol, so the page's CSP stays as it is."""
    page.evaluate(axe_source())
    found = page.evaluate(
        """() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
             .then(result => result.violations.map(v =>
               `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`))"""
    )
    return list(found)
