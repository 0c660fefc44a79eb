"""TechEmpower Framework Benchmarks' /plaintext and /json, as a native
pyparallel app, PyParallel style (one method per route):

    pyparallel serve examples.tfb:app --bind 127.0.0.1:8080 --workers 2

Per the TechEmpower rules every answer carries Server, a Date that
changes, an exact Content-Type and a Content-Length (the server adds all
but the type, which the return value picks: bytes -> text/plain, a dict ->
application/json).
"""

from pyparallel.http import App, Response


class TechEmpower(App):
    def plaintext(self, request):
        return Response(b"Hello, World!", content_type="text/plain")

    def json(self, request):
        return {"message": "Hello, World!"}


app = TechEmpower()
