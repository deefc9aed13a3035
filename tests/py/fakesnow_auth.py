"""fakesnow's server with a login gate, for tidemark's Snowflake tests.

fakesnow 0.12.1 (`fakesnow -s`) accepts every login: it reads neither the password nor the
JWT. To test authentication honestly, this wraps fakesnow's own Starlette app (the same app
`fakesnow -s` serves, unchanged) in an ASGI middleware that checks
`POST /session/v1/login-request` the way Snowflake documents it, independently of tidemark:

* password logins: LOGIN_NAME and PASSWORD must match; otherwise Snowflake's answer
  `390100 Incorrect username or password was specified.` (HTTP 200, success false);
* key-pair logins (AUTHENTICATOR = SNOWFLAKE_JWT): the TOKEN must be an RS256 JWT that
  verifies against the registered public key (PyJWT + cryptography), with
  iss = <ACCOUNT>.<USER>.SHA256:<base64 sha256 of the public key's DER SPKI>,
  sub = <ACCOUNT>.<USER>, iat/exp present, exp - iat <= 3600, not expired;
  otherwise `390144 JWT token is invalid.`

Every other request goes to fakesnow untouched.

    python fakesnow_auth.py --host 127.0.0.1 --port 8085 --account TESTACCT --user LOADER \
        --password-env SF_PASSWORD --public-key tests/fixtures/snowflake_test_key.pub
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import sys
import time

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from fakesnow.server import app as fakesnow_app


def fingerprint(public_key) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class LoginGate:
    def __init__(self, app, account: str, user: str, password: str | None, public_key_pem: bytes | None):
        self.app = app
        self.account = account.upper()
        self.user = user.upper()
        self.password = password
        self.public_key = serialization.load_pem_public_key(public_key_pem) if public_key_pem else None
        self.logins = {"ok": 0, "refused": 0}

    def refusal(self, data: dict) -> tuple[str, str] | None:
        if str(data.get("LOGIN_NAME", "")).upper() != self.user:
            return "390100", "Incorrect username or password was specified."
        if data.get("AUTHENTICATOR") == "SNOWFLAKE_JWT":
            if self.public_key is None:
                return "390144", "JWT token is invalid. (no public key registered for the user)"
            qualified = f"{self.account}.{self.user}"
            try:
                claims = jwt.decode(
                    data.get("TOKEN", ""),
                    self.public_key,
                    algorithms=["RS256"],
                    options={"require": ["iss", "sub", "iat", "exp"]},
                )
            except jwt.PyJWTError as e:
                return "390144", f"JWT token is invalid. ({type(e).__name__})"
            expected_iss = f"{qualified}.SHA256:{fingerprint(self.public_key)}"
            if claims["iss"] != expected_iss:
                return "390144", f"JWT token is invalid. (iss {claims['iss']!r} != {expected_iss!r})"
            if claims["sub"] != qualified:
                return "390144", f"JWT token is invalid. (sub {claims['sub']!r} != {qualified!r})"
            if claims["exp"] - claims["iat"] > 3600 or claims["iat"] > time.time() + 60:
                return "390144", "JWT token is invalid. (lifetime)"
            return None
        if self.password is None or data.get("PASSWORD") != self.password:
            return "390100", "Incorrect username or password was specified."
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/session/v1/login-request":
            return await self.app(scope, receive, send)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = dict(scope["headers"])
        raw = gzip.decompress(body) if headers.get(b"content-encoding") == b"gzip" else body
        refused = self.refusal(json.loads(raw).get("data", {}))
        if refused:
            self.logins["refused"] += 1
            code, message = refused
            payload = json.dumps(
                {"data": {"nextAction": "RETRY_LOGIN", "authnMethod": "KEYPAIR_OR_PASSWORD"},
                 "code": code, "message": message, "success": False, "headers": None}
            ).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return
        self.logins["ok"] += 1
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--account", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-env", help="environment variable holding the user's password")
    p.add_argument("--public-key", help="PEM public key registered for key-pair logins")
    a = p.parse_args()
    password = os.environ.get(a.password_env) if a.password_env else None
    pem = open(a.public_key, "rb").read() if a.public_key else None
    app = LoginGate(fakesnow_app, a.account, a.user, password, pem)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
