"""The web console: server-rendered pages over the public API (docs/console.md).

``routes/console.py`` holds the pages; this package their helpers (``sessions``: sign-in state,
``api``: the in-process client of the public REST routes, ``forms``: JSON schema → HTML form), the
Jinja2 templates and the static CSS and JavaScript. Nothing here reads the job tables: every page is
built from answers of the public API, called with the signed-in user's own key.
"""
