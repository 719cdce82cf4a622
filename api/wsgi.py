"""The WSGI entry point (`gunicorn api.wsgi:app`): configuration from the environment,
logging as LOG_LEVEL / LOG_FORMAT say, and the app with the Celery publisher — unless the
plans file changed a synced price in place (docs/operations.md#changing-a-price)."""

from enrichment import logs
from enrichment.billing.operations import check_prices
from enrichment.config import Settings
from workers.publisher import CeleryPublisher

from . import create_app

settings = Settings.from_env()
logs.configure(settings.log_level, settings.log_format)
check_prices(settings)
app = create_app(settings, publisher=CeleryPublisher())
