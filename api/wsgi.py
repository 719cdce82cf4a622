"""The WSGI entry point (`gunicorn api.wsgi:app`): the app with the Celery publisher."""

from workers.publisher import CeleryPublisher

from . import create_app

app = create_app(publisher=CeleryPublisher())
