"""The TechEmpower /plaintext and /json routes for bench/bench_http.py's
Python peers, one callable per interface:

    wsgi   PEP 3333: gunicorn, granian --interface wsgi, pyparallel serve --interface wsgi
    asgi   ASGI 3: uvicorn
    rsgi   granian's RSGI: granian --interface rsgi

Each answers /plaintext with "Hello, World!" (text/plain) and /json with
{"message":"Hello, World!"} (application/json, serialized per request, as
the TechEmpower rules ask), with a Content-Length; the servers add Server
and Date.  Anything else is a 404.
"""

import json

PLAIN = b"Hello, World!"
NOT_FOUND = b"Not Found"


def _json():
    return json.dumps({"message": "Hello, World!"}, separators=(",", ":")).encode()


def wsgi(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/plaintext":
        status, ctype, body = "200 OK", "text/plain", PLAIN
    elif path == "/json":
        status, ctype, body = "200 OK", "application/json", _json()
    else:
        status, ctype, body = "404 Not Found", "text/plain", NOT_FOUND
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/plaintext":
        status, ctype, body = 200, b"text/plain", PLAIN
    elif path == "/json":
        status, ctype, body = 200, b"application/json", _json()
    else:
        status, ctype, body = 404, b"text/plain", NOT_FOUND
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def rsgi(scope, proto):
    path = scope.path
    if path == "/plaintext":
        status, ctype, body = 200, "text/plain", PLAIN
    elif path == "/json":
        status, ctype, body = 200, "application/json", _json()
    else:
        status, ctype, body = 404, "text/plain", NOT_FOUND
    proto.response_bytes(status, [("content-type", ctype),
                                  ("content-length", str(len(body)))], body)
