"""Apps the HTTP tests serve (workers import this module by name)."""

import json
import os
import sys
import time

from pyparallel.http import App, FileResponse, Response


def _build_shared():
    return {"words": {"apple": 3, "pear": 5}, "built_in_main": os.getpid()}


app = App(shared=_build_shared)


@app.route("/plaintext")
def plaintext(request):
    return Response(b"Hello, World!", content_type="text/plain")


@app.route("/json")
def json_(request):
    return {"message": "Hello, World!"}


@app.route("/hello/{name}")
def hello(request, name):
    return f"<p>hello {name}</p>"


@app.route("/files/{rest:path}")
def files(request, rest):
    return {"rest": rest}


@app.route("/echo", methods=["POST", "PUT"])
def echo(request):
    return Response(request.body, headers={"X-Length": str(len(request.body))},
                    content_type="application/octet-stream")


@app.route("/request")
def describe(request):
    return {"method": request.method, "path": request.path, "query": request.query,
            "params": request.query_params, "headers": request.headers,
            "client": list(request.client), "version": request.version}


@app.route("/shared/{word}")
def shared(request, word):
    return {"count": request.shared["words"].get(word), "pid": request.shared["built_in_main"]}


@app.route("/boom")
def boom(request):
    raise ValueError("the handler failed on purpose")


@app.route("/bad-return")
def bad_return(request):
    return 42


class _Lazy(Response):
    """A subclass whose body is a property: read by name, not by slot."""

    @property
    def body(self):
        return b"lazy " + str(self.status).encode()


@app.route("/subclass")
def subclass(request):
    return _Lazy(status=202, content_type="text/x-lazy")


@app.route("/bad-header")
def bad_header(request):
    return Response(b"x", headers={"X-Evil": "a\r\nSet-Cookie: owned"})


@app.route("/status")
def status(request):
    return Response(b"", status=int(request.query_params.get("code", "200")))


@app.route("/none")
def none(request):
    return None


@app.route("/sleep")
def sleep(request):
    time.sleep(float(request.query_params.get("s", "0.2")))
    return b"slept " + request.query_params.get("tag", "").encode()


@app.route("/file")
def file(request):
    return FileResponse(__file__)


@app.route("/big")
def big(request):
    return b"x" * 1_000_000


class Methods(App):
    """PyParallel style: methods are routes."""

    def index(self, request):
        return b"index"

    def plaintext(self, request):
        return b"Hello, World!"

    def _private(self, request):
        return b"never"


methods_app = Methods()


# ---- WSGI ----------------------------------------------------------------------

def wsgi_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/env":
        keys = ["REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL",
                "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_X_CUSTOM", "REMOTE_ADDR",
                "SCRIPT_NAME", "wsgi.url_scheme", "wsgi.multithread", "HTTP_USER_AGENT"]
        body = json.dumps({k: environ.get(k) for k in keys}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/upload":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % len(data)]
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d lines" % len(lines)]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(5))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))
    if path == "/error-before":
        raise RuntimeError("failed before start_response")
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("oops")
        except KeyError:
            import sys
            start_response("500 Internal Server Error",
                           [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]
    if path == "/closing":
        return _Closing(start_response)
    if path == "/big-stream":
        # ?n=CHUNKS&mark=PATH: 64 KiB chunks; PATH gets how many were made,
        # and "closed" once close() runs.
        from urllib.parse import parse_qs
        q = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        n = int(q["n"]) if "n" in q else None
        return _Counted(n, q["mark"])
    if path == "/sleep":
        time.sleep(float(environ["QUERY_STRING"].partition("s=")[2] or "0.2"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/plaintext":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, World!"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


class _Counted:
    """n chunks of 64 KiB (None: forever), counted into a file."""

    def __init__(self, n, mark):
        self.n, self.mark, self.made = n, mark, 0

    def __iter__(self):
        chunk = b"x" * 65536
        while self.n is None or self.made < self.n:
            self.made += 1
            if self.made % 16 == 0:
                self._note(str(self.made))
            yield chunk

    def _note(self, text):
        with open(self.mark, "w") as f:
            f.write(text)

    def close(self):
        self._note("closed %d" % self.made)


class _Closing:
    closed_marker = "/tmp/pyparallel-wsgi-closed"

    def __init__(self, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        yield b"a"
        yield b"b"

    def close(self):
        with open(self.closed_marker, "w") as f:
            f.write("closed")


def _flask():
    import flask
    f = flask.Flask("http_apps_flask")

    @f.route("/")
    def index():
        return "flask index"

    @f.route("/json", methods=["POST"])
    def js():
        return flask.jsonify(got=flask.request.get_json())

    @f.route("/hello/<name>")
    def hello(name):
        return f"hello {name} from flask"
    return f


def _bottle():
    import bottle
    b = bottle.Bottle()

    @b.route("/")
    def index():
        return "bottle index"

    @b.route("/form", method="POST")
    def form():
        return "name=" + bottle.request.forms.get("name", "")
    return b


def _falcon():
    import falcon

    class Hello:
        def on_get(self, req, resp, name):
            resp.text = f"hello {name} from falcon"

    class Echo:
        def on_post(self, req, resp):
            resp.media = {"got": req.get_media()}

    f = falcon.App()
    f.add_route("/hello/{name}", Hello())
    f.add_route("/json", Echo())
    return f


def _django():
    import django
    from django.conf import settings
    from django.http import HttpResponse, JsonResponse
    from django.urls import path

    def index(request):
        return HttpResponse("django index")

    def hello(request, name):
        return JsonResponse({"hello": name, "q": request.GET.get("q")})

    import types
    urls = types.ModuleType("http_apps_django_urls")
    urls.urlpatterns = [path("", index), path("hello/<str:name>", hello)]
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(DEBUG=False, ROOT_URLCONF=urls.__name__, ALLOWED_HOSTS=["*"],
                           SECRET_KEY="tests-only", MIDDLEWARE=[], INSTALLED_APPS=[])
    django.setup()
    from django.core.wsgi import get_wsgi_application
    return get_wsgi_application()


flask_app = _flask()
bottle_app = _bottle()


def __getattr__(name):
    # Heavier frameworks load only in the servers that serve them.
    makers = {"falcon_app": _falcon, "django_app": _django}
    if name not in makers:
        raise AttributeError(name)
    app = makers[name]()
    globals()[name] = app
    return app
