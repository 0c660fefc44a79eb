"""pyparallel.http: an HTTP/1.1 server whose Python handlers run on every
core of one process (docs/http.md).

    from pyparallel.http import App

    app = App()

    @app.route("/hello/{name}")
    def hello(request, name):
        return {"hello": name}

Run it with ``pyparallel serve module:app`` (or ``serve(app)``).  WSGI apps
(Flask, Bottle, Falcon...) run with ``--interface wsgi``.
"""

from ._http import App, FileResponse, FileWrapper, HTTPConfig, Response, serve

__all__ = ["App", "Response", "FileResponse", "FileWrapper", "HTTPConfig", "serve"]
