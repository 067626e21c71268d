"""Entry point: `gunicorn -c gunicorn.conf.py app:app` (what `make run` does) or `flask --app app run`.

Entry points own process set-up: logging here, the embedded redis-server in gunicorn.conf.py (or,
under `flask run`, on first use of Redis).
"""

import logging

from chat import create_app
from chat.config import Config as app_config
from chat.web.security import redact_logs
from chat.web.structured_logs import use_json_lines

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
if app_config.LOG_FORMAT == "json":
    use_json_lines()
redact_logs()  # no log line carries a URL's password
app = create_app()
