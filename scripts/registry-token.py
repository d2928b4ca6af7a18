#!/usr/bin/env python3
"""A token endpoint on 127.0.0.1 for docker-registry's token auth, as Docker Hub's auth.docker.io
works, for the tests: anonymous clients get pull tokens, a listed user gets pull and push, a wrong
password gets 401. Tokens are ES256 JWTs whose x5c header holds a self-signed certificate, which
it writes for the registry's rootcertbundle.

    registry-token.py --folder DIR --user NAME:PASSWORD [--user ...]

It writes DIR/cert.pem, then DIR/port once it listens, and counts the tokens it issued in
DIR/issued.
"""
import argparse
import base64
import datetime
import http.server
import json
import os
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

arguments = argparse.ArgumentParser()
arguments.add_argument("--folder", required=True)
arguments.add_argument("--user", action="append", default=[])
arguments.add_argument("--issuer", default="layerctl-test-issuer")
options = arguments.parse_args()
users = dict(entry.split(":", 1) for entry in options.user)

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "layerctl test tokens")])
now = datetime.datetime.now(datetime.timezone.utc)
certificate = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=1))
    .not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(key, hashes.SHA256())
)
with open(os.path.join(options.folder, "cert.pem"), "wb") as out:
    out.write(certificate.public_bytes(serialization.Encoding.PEM))
chain = [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()]
issued = 0


def encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(subject, service, access):
    header = {"typ": "JWT", "alg": "ES256", "x5c": chain}
    moment = int(time.time())
    claims = {"iss": options.issuer, "sub": subject, "aud": service, "exp": moment + 300, "nbf": moment - 10,
              "iat": moment, "jti": encode(os.urandom(12)), "access": access}
    signing_input = encode(json.dumps(header).encode()) + "." + encode(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class Tokens(http.server.BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def do_GET(self):
        global issued
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        subject = ""
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if users.get(user) != password:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            subject = user
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            repository, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a == "pull" or (a == "push" and subject)]
            access.append({"type": kind, "name": repository, "actions": granted})
        body = json.dumps({"token": token(subject, query.get("service", [""])[0], access), "expires_in": 300}).encode()
        issued += 1
        with open(os.path.join(options.folder, "issued"), "w") as out:
            out.write(str(issued))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tokens)
with open(os.path.join(options.folder, "port"), "w") as out:
    out.write(str(server.server_port))
server.serve_forever()
