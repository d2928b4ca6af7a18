#!/usr/bin/env python3
"""An HTTP server on 127.0.0.1 that never finishes a download, for tests: every GET is answered
200 with no length, then one byte every half second, for as long as the client stays.

    trickle-server.py --port-file F

--port-file   where the port it listens on is written once it listens.
"""
import argparse
import http.server
import os
import time

arguments = argparse.ArgumentParser()
arguments.add_argument("--port-file", required=True)
options = arguments.parse_args()


class Trickle(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\x1f")
                self.wfile.flush()
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
with open(options.port_file + ".tmp", "w") as port_file:
    port_file.write(str(server.server_address[1]))
os.rename(options.port_file + ".tmp", options.port_file)
server.serve_forever()
