"""The README documents what the code reads: every setting, and a layout that matches the tree."""

from __future__ import annotations

import re

from helpers.apps import ROOT

SETTING = re.compile(r"""(?:env_int|env_flag|os\.environ\.get)\(\s*["']([A-Z][A-Z0-9_]+)["']""")


def settings_read_by(*paths: str) -> set[str]:
    return {name for path in paths for name in SETTING.findall((ROOT / path).read_text())}


def readme_table_settings() -> set[str]:
    """Every `NAME` in the first column of the README's Configuration table."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])
    }


def test_every_setting_the_app_reads_is_in_the_readme_table():
    read = settings_read_by("chat/config.py", "gunicorn.conf.py")
    assert {"DATABASE_URL", "REDIS_URL", "STREAM_FLUSH_MS", "BIND"} <= read  # the scan finds them
    missing = sorted(read - readme_table_settings())
    assert not missing, f"settings missing from the README's Configuration table: {missing}"


def test_the_readme_layout_names_every_module_where_it_lives():
    """Every module of the package is named under its own folder's entry (a folder's entry runs
    from its `chat/<folder>/` line to the next entry), every top-level module by its path."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    entries: dict[str, str] = {}
    current = None
    for line in layout.splitlines():
        head = line.split(" ", 1)[0]
        if head.startswith("chat/"):
            current = head
            entries[current] = line
        elif line.startswith(" ") and current:
            entries[current] += line
        else:
            current = None
    misplaced = []
    for path in (ROOT / "chat").rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        folder, name = relative.rsplit("/", 1)
        if folder == "chat":
            named = relative in entries
        else:
            named = name == "__init__.py" or name in entries.get(folder + "/", "")
        if not named:
            misplaced.append(relative)
    assert not misplaced, f"modules the README's layout does not name under their folder: {sorted(misplaced)}"


def test_nothing_points_outside_the_repository():
    tracked = [*ROOT.glob("chat/**/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md", *ROOT.glob("tests/*.py")]
    offenders = [path.name for path in tracked if "../shared" in path.read_text() and path.name != "test_docs.py"]
    assert not offenders, f"files pointing at ../shared: {offenders}"
