"""The WSGI entry point (`gunicorn api.wsgi:app`): the app with the Celery publisher."""

import logging

from workers.publisher import CeleryPublisher

from . import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app(publisher=CeleryPublisher())
