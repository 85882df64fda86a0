"""gunicorn settings for the `web` process: uvicorn workers serving the falcon.asgi app."""

from ftl.config import get_settings

_settings = get_settings()

bind = f"{_settings.web_host}:{_settings.web_port}"
workers = _settings.web_concurrency
worker_class = "uvicorn_worker.UvicornWorker"
# APPSEC: slow clients must not hold workers forever (slowloris); keep-alive stays short.
timeout = 30
graceful_timeout = 10
keepalive = 5
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "ftl-web"
# NOTE: gunicorn ≥ 25.1 opens a control socket at one fixed path per user; several `web`
# processes on one host (scaled replicas, the e2e tests) would fight over it.
control_socket_disable = True
