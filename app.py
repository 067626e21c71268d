"""Entry point: `flask --app app run`, `gunicorn -c gunicorn.conf.py app:app` or `gunicorn 'app:create_app()'`."""
from chat import create_app

app = create_app()
