#!/usr/bin/env python3
"""A read-only registry on 127.0.0.1 that serves whatever bytes a folder holds, for tests that play
a stranger's registry: it checks nothing, so a manifest, config or blob can be anything at all.

    registry-files.py --folder F

F/port                written once it listens (the port it chose).
F/manifests/REF       the body of GET /v2/NAME/manifests/REF (any NAME; REF a tag or digest),
F/manifests/REF.type  its Content-Type (default: OCI image manifest).
F/blobs/DIGEST        the body of GET /v2/NAME/blobs/DIGEST.
F/token               the body of GET /token (a token endpoint, for a realm to name).
FILE.status           beside any of these: the status to answer with (default 200),
FILE.headers          and header lines to add (a redirect's Location, a WWW-Authenticate).
FILE.auth             a WWW-Authenticate challenge: a request without an Authorization header
                      is answered 401 with it.
F/requests.log        each request as a JSON line: method, path and headers.
Anything else is a 404 with the distribution spec's error body. HEAD answers as GET, without
the body. Files are read at each request, so a test may change them between pulls.
"""
import argparse
import http.server
import json
import os
import re
import threading

arguments = argparse.ArgumentParser()
arguments.add_argument("--folder", required=True)
options = arguments.parse_args()

# A reference as a file name: no slash, no dot-dot, nothing hidden.
route = re.compile(r"^/v2/(?:[a-z0-9._/-]+/)?(manifests|blobs)/([A-Za-z0-9_][A-Za-z0-9_.:+-]{0,200})$")


log_lock = threading.Lock()


def beside(file, suffix, default):
    if not os.path.isfile(file + suffix):
        return default
    with open(file + suffix) as source:
        return source.read()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, send_body):
        with log_lock, open(os.path.join(options.folder, "requests.log"), "a") as log:
            log.write(json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers.items())}) + "\n")
        path = self.path.split("?", 1)[0]
        if path == "/v2/" or path == "/v2":
            return self.reply(200, b"{}", "application/json", send_body)
        file = None
        if path == "/token":
            file = os.path.join(options.folder, "token")
            kind_type = "application/json"
        found = route.match(path)
        if found and ".." not in found.group(2):
            kind, name = found.groups()
            file = os.path.join(options.folder, kind, name)
            kind_type = "application/vnd.oci.image.manifest.v1+json" if kind == "manifests" else "application/octet-stream"
        if file and os.path.isfile(file + ".auth") and "Authorization" not in self.headers:
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
            challenge = "WWW-Authenticate: " + beside(file, ".auth", "").strip()
            return self.reply(401, body, "application/json", send_body, [challenge])
        if file and os.path.isfile(file):
            with open(file, "rb") as source:
                body = source.read()
            kind_type = beside(file, ".type", kind_type).strip()
            status = int(beside(file, ".status", "200"))
            headers = [line for line in beside(file, ".headers", "").splitlines() if line]
            return self.reply(status, body, kind_type, send_body, headers)
        body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"not here"}]}'
        return self.reply(404, body, "application/json", send_body)

    def reply(self, status, body, content_type, send_body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for line in headers:
            name, value = line.split(":", 1)
            self.send_header(name.strip(), value.strip())
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def log_message(self, format, *args):
        pass


for kind in ("manifests", "blobs"):
    os.makedirs(os.path.join(options.folder, kind), exist_ok=True)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(os.path.join(options.folder, "port.tmp"), "w") as out:
    out.write(str(server.server_address[1]))
os.replace(os.path.join(options.folder, "port.tmp"), os.path.join(options.folder, "port"))
server.serve_forever()
