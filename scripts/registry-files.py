#!/usr/bin/env python3
"""A read-only registry on 127.0.0.1 that serves whatever bytes a folder holds, for tests that play
a stranger's registry: it checks nothing, so a manifest, config or blob can be anything at all.

    registry-files.py --folder F

F/port                written once it listens (the port it chose).
F/manifests/REF       the body of GET /v2/NAME/manifests/REF (any NAME; REF a tag or digest),
F/manifests/REF.type  its Content-Type (default: OCI image manifest).
F/blobs/DIGEST        the body of GET /v2/NAME/blobs/DIGEST.
Anything else is a 404 with the distribution spec's error body. HEAD answers as GET, without
the body. Files are read at each request, so a test may change them between pulls.
"""
import argparse
import http.server
import os
import re

arguments = argparse.ArgumentParser()
arguments.add_argument("--folder", required=True)
options = arguments.parse_args()

# A reference as a file name: no slash, no dot-dot, nothing hidden.
route = re.compile(r"^/v2/(?:[a-z0-9._/-]+/)?(manifests|blobs)/([A-Za-z0-9_][A-Za-z0-9_.:+-]{0,200})$")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, send_body):
        path = self.path.split("?", 1)[0]
        if path == "/v2/" or path == "/v2":
            return self.reply(200, b"{}", "application/json", send_body)
        found = route.match(path)
        if found:
            kind, name = found.groups()
            file = os.path.join(options.folder, kind, name)
            if ".." not in name and os.path.isfile(file):
                with open(file, "rb") as source:
                    body = source.read()
                kind_type = "application/vnd.oci.image.manifest.v1+json" if kind == "manifests" else "application/octet-stream"
                if os.path.isfile(file + ".type"):
                    with open(file + ".type") as source:
                        kind_type = source.read().strip()
                return self.reply(200, body, kind_type, send_body)
        body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"not here"}]}'
        return self.reply(404, body, "application/json", send_body)

    def reply(self, status, body, content_type, send_body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
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
