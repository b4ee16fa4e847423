"""The web dashboard: a static page (``GET /``) and the JSON routes it calls, installed in each
serving replica by :func:`raysys.app.dashboard.routes.install`."""
