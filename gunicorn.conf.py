"""gunicorn's settings (it reads ./gunicorn.conf.py from its working directory): its own
lines (start-up, worker boots and timeouts) in LOG_FORMAT like the app's, and no access log —
paths and queries can hold identifiers; the app logs one line per request with the route."""

import os

from gunicorn.glogging import Logger

from enrichment import logs


class AppFormatLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.formatter((os.environ.get("LOG_FORMAT") or "").lower()))
            handler.addFilter(logs.ContextFilter())


logger_class = AppFormatLogger
accesslog = None
