"""The package ships its files: a wheel installed outside the checkout serves pages and migrates."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers.apps import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.own_database]  # its own SQLite database

SERVE_FROM_THE_WHEEL = """
import sys
import chat
from chat import create_app

assert "site-packages" in chat.__file__, chat.__file__
app = create_app()
client = app.test_client()
page = client.get("/agent/helper")
script = client.get("/static/vendor/htmx-2.0.11.min.js")
print(page.status_code, "Helper" in page.get_data(as_text=True), script.status_code, len(script.data))
"""


def test_a_wheel_installed_in_a_fresh_venv_migrates_and_serves_pages(tmp_path):
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)], check=True, env=env
    )
    [wheel] = wheels.glob("durable_chat-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], check=True, env=env
    )
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}",
            "RESUMABLE_STREAMS": "0",
            "INSTANCE_PATH": str(tmp_path / "instance"),
        }
    )
    subprocess.run(
        [str(venv / "bin/flask"), "--app", "chat:create_app", "db", "upgrade"],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
    )
    served = subprocess.run(
        [str(venv / "bin/python"), "-c", SERVE_FROM_THE_WHEEL],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    status, shows_agent, script_status, script_bytes = served.stdout.split()
    assert (status, shows_agent, script_status) == ("200", "True", "200")
    assert int(script_bytes) > 10_000
