"""`ftl dev google`: a local OpenID-style issuer on loopback, so development and the tests verify
real RS256 Google-shaped ID tokens with no internet (SPEC §4).

Serves `GET /.well-known/openid-configuration`, `GET /certs` (the JWKS; point GOOGLE_JWKS_URL at
it) and `POST /mint {email, sub?, aud?, nonce?, emailVerified?, givenName?, familyName?,
expiresIn?, iss?}` -> `{idToken}`. A fresh key pair per start: verifiers fetch it again on the
unknown `kid`. Development only; it binds to 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization

from ftl.store.auth.google import DEV_CLIENT_ID, GOOGLE_ISSUERS
from ftl.store.auth.tokens import (
    generate_private_key_b64,
    key_id,
    public_jwk,
    rsa_signing_key,
    sign_rs256,
)

LOOPBACK = "127.0.0.1"
ID_TOKEN_TTL_S = 3600
MAX_MINT_BODY_BYTES = 4096


class DevGoogleIssuer:
    def __init__(self, *, port: int = 0, client_id: str = DEV_CLIENT_ID) -> None:
        private_pem = base64.b64decode(generate_private_key_b64())
        private = serialization.load_pem_private_key(private_pem, password=None)
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = key_id(public_pem)
        self.jwks = {"keys": [public_jwk(public_pem, self.kid)]}
        self._signing_key = rsa_signing_key(private_pem.decode("ascii"))
        self.client_id = client_id
        self.jwks_requests = 0  # how often verifiers fetched the keys (the tests watch it)
        self.server = ThreadingHTTPServer((LOOPBACK, port), _handler(self))
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/certs"

    def mint(
        self,
        email: str,
        *,
        sub: str | None = None,
        aud: str | None = None,
        nonce: str | None = None,
        email_verified: bool = True,
        given_name: str | None = None,
        family_name: str = "",
        expires_in_s: int = ID_TOKEN_TTL_S,
        iss: str = GOOGLE_ISSUERS[1],
    ) -> str:
        """An ID token shaped like Google's; `sub` defaults to a stable number per email."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": iss,
            "aud": aud or self.client_id,
            "sub": sub or str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)),
            "email": email,
            "email_verified": email_verified,
            "given_name": given_name if given_name is not None else email.split("@")[0],
            "family_name": family_name,
            "iat": now,
            "exp": now + expires_in_s,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return sign_rs256(claims, self._signing_key, self.kid)

    def start(self) -> DevGoogleIssuer:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _mint_from(issuer: DevGoogleIssuer, body: dict[str, Any]) -> str:
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise ValueError("email is required")
    return issuer.mint(
        email,
        sub=body.get("sub"),
        aud=body.get("aud"),
        nonce=body.get("nonce"),
        email_verified=bool(body.get("emailVerified", True)),
        given_name=body.get("givenName"),
        family_name=str(body.get("familyName", "")),
        expires_in_s=int(body.get("expiresIn", ID_TOKEN_TTL_S)),
        iss=str(body.get("iss", GOOGLE_ISSUERS[1])),
    )


def _handler(issuer: DevGoogleIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, document: dict[str, Any]) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._send(200, {"issuer": GOOGLE_ISSUERS[1], "jwks_uri": issuer.jwks_url})
            elif self.path == "/certs":
                issuer.jwks_requests += 1
                self._send(200, issuer.jwks)
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/mint":
                self._send(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if length > MAX_MINT_BODY_BYTES:
                    raise ValueError("body too large")
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                self._send(200, {"idToken": _mint_from(issuer, body)})
            except (ValueError, TypeError) as exc:
                self._send(400, {"error": str(exc)})

        def log_message(self, format: str, *args: Any) -> None:
            return  # NOTE: quiet; the CLI prints its own one line

    return Handler
