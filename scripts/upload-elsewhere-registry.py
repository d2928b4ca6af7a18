#!/usr/bin/env python3
"""A registry on 127.0.0.1 that takes pushes with basic auth and has their blobs uploaded to a
second server, for tests: the upload locations it gives name that storage server, as registries
on object storage do. Only what a push needs is served.

    upload-elsewhere-registry.py --port-file F --storage-port-file S --log L --user NAME:PASSWORD

--port-file          where the registry's port is written once both listen.
--storage-port-file  where the storage server's port is written.
--log                a line of JSON per request: which server, the method, the path, and whether
                     it carried an Authorization header (never its value).
--user               the one user the registry takes; the storage server asks for nothing.
--presigned          upload locations as object storage presigns them: https, with a signature
                     in the query (the storage server speaks plain HTTP, so no upload gets there).
"""
import argparse
import base64
import hashlib
import http.server
import json
import os
import threading
import uuid

arguments = argparse.ArgumentParser()
arguments.add_argument("--port-file", required=True)
arguments.add_argument("--storage-port-file", required=True)
arguments.add_argument("--log", required=True)
arguments.add_argument("--user", required=True)
arguments.add_argument("--presigned", action="store_true")
options = arguments.parse_args()

# What a presigned location carries: a credential of its own, for as long as it lasts.
SIGNATURE = "X-Amz-Signature=5ecre7516a7ure"

expected = "Basic " + base64.b64encode(options.user.encode()).decode()
blobs = set()
uploads = {}
lock = threading.Lock()
ports = {}


def write_atomically(path, text):
    with open(path + ".tmp", "w") as written:
        written.write(text)
    os.rename(path + ".tmp", path)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name = ""

    def log_request_line(self):
        with lock, open(options.log, "a") as log:
            log.write(json.dumps({
                "server": self.server_name, "method": self.command, "path": self.path,
                "authorization": "Authorization" in self.headers,
            }) + "\n")

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def answer(self, status, headers=(), body=b""):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *_):
        pass


class Registry(Handler):
    server_name = "registry"

    def handle_any(self):
        self.log_request_line()
        sent = self.body()
        if self.headers.get("Authorization") != expected:
            self.answer(401, [("WWW-Authenticate", 'Basic realm="layerctl-test"')])
            return
        parts = self.path.split("?")[0].split("/")
        if self.path == "/v2/":
            self.answer(200, [("Content-Type", "application/json")], b"{}")
        elif self.command == "HEAD" and "blobs" in parts:
            with lock:
                known = parts[-1] in blobs
            self.answer(200 if known else 404)
        elif self.command == "POST" and parts[-2:] == ["uploads", ""]:
            upload = str(uuid.uuid4())
            with lock:
                uploads[upload] = b""
            if options.presigned:
                location = "https://127.0.0.1:%d/uploads/%s?%s" % (ports["storage"], upload, SIGNATURE)
            else:
                location = "http://127.0.0.1:%d/uploads/%s" % (ports["storage"], upload)
            self.answer(202, [("Location", location), ("Range", "0-0")])
        elif self.command == "PUT" and "manifests" in parts:
            digest = "sha256:" + hashlib.sha256(sent).hexdigest()
            self.answer(201, [("Docker-Content-Digest", digest)])
        else:
            self.answer(404)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = handle_any


class Storage(Handler):
    server_name = "storage"

    def handle_any(self):
        self.log_request_line()
        sent = self.body()
        path, _, query = self.path.partition("?")
        upload = path.split("/")[-1]
        with lock:
            if upload not in uploads:
                self.answer(404)
                return
            uploads[upload] += sent
            whole = uploads[upload]
        location = "http://127.0.0.1:%d/uploads/%s" % (ports["storage"], upload)
        if self.command == "PATCH":
            self.answer(202, [("Location", location), ("Range", "0-%d" % (len(whole) - 1))])
        elif self.command == "PUT" and query.startswith("digest="):
            digest = query[len("digest="):]
            if "sha256:" + hashlib.sha256(whole).hexdigest() != digest:
                self.answer(400)
                return
            with lock:
                blobs.add(digest)
            self.answer(201, [("Docker-Content-Digest", digest)])
        else:
            self.answer(404)

    do_PUT = do_PATCH = handle_any


registry = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
storage = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Storage)
ports["storage"] = storage.server_address[1]
threading.Thread(target=storage.serve_forever, daemon=True).start()
write_atomically(options.storage_port_file, str(ports["storage"]))
write_atomically(options.port_file, str(registry.server_address[1]))
registry.serve_forever()
