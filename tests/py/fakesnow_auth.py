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

With `--stage-encryption full` (Snowflake's default for internal stages, SNOWFLAKE_FULL) the
gate also plays the client-side-encryption half of an internal stage that fakesnow lacks:

* a PUT's response gets `encryptionMaterial` (a fresh 128-bit query stage master key, the
  queryId and an smkId), as Snowflake answers for such stages;
* an upload to the presigned URL must carry the drivers' `x-goog-meta-encryptiondata` and
  `x-goog-meta-matdesc` headers; the gate decrypts the body with the Python connector's own
  `SnowflakeEncryptionUtil.decrypt_stream` (not tidemark's code), checks that `sfc-digest` is
  the SHA-256 of the plaintext and hands the plaintext to fakesnow, as Snowflake decrypts
  before COPY reads. An unencrypted or undecryptable upload is refused with HTTP 400.

`--stage-encryption sse` (SNOWFLAKE_SSE) passes uploads through unencrypted.
`GET /tidemark-test/stats` answers the counts (logins, decrypted uploads, refusals).

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
import io
import uuid

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
    def __init__(self, app, account: str, user: str, password: str | None, public_key_pem: bytes | None,
                 stage_encryption: str = "sse"):
        self.app = app
        self.account = account.upper()
        self.user = user.upper()
        self.password = password
        self.public_key = serialization.load_pem_public_key(public_key_pem) if public_key_pem else None
        self.logins = {"ok": 0, "refused": 0}
        self.stage_encryption = stage_encryption
        # queryId -> (base64 master key, smkId) of every PUT answered with encryption material.
        self.materials: dict[str, tuple[str, int]] = {}
        self.uploads = {"decrypted": 0, "refused": 0, "plain": 0}

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

    @staticmethod
    async def read_body(receive) -> bytes:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        return body

    @staticmethod
    async def answer(send, status: int, payload: bytes, content_type: bytes = b"application/json"):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def query_with_material(self, scope, receive, send):
        """Runs the query on fakesnow; adds encryption material to a PUT's answer."""
        start = None
        chunks = []

        async def capture(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await finish()

        async def finish():
            body = b"".join(chunks)
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            data = doc.get("data") if isinstance(doc, dict) else None
            if isinstance(data, dict) and data.get("command") == "UPLOAD" and "stageInfo" in data:
                query_id = str(uuid.uuid4())
                key = base64.b64encode(os.urandom(16)).decode()
                smk_id = 1_000_000 + len(self.materials)
                self.materials[query_id] = (key, smk_id)
                data["encryptionMaterial"] = {"queryStageMasterKey": key, "queryId": query_id, "smkId": smk_id}
                data["stageInfo"]["isClientSideEncrypted"] = True
                body = json.dumps(doc).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, capture)

    def decrypt_upload(self, headers: dict, body: bytes) -> tuple[bytes | None, str]:
        from snowflake.connector.constants import EncryptionMetadata
        from snowflake.connector.encryption_util import SnowflakeEncryptionUtil
        from snowflake.connector.storage_client import SnowflakeFileEncryptionMaterial

        data = headers.get(b"x-goog-meta-encryptiondata")
        matdesc = headers.get(b"x-goog-meta-matdesc")
        if not data or not matdesc:
            return None, "upload to a SNOWFLAKE_FULL stage without x-goog-meta-encryptiondata/matdesc"
        try:
            data = json.loads(data)
            desc = json.loads(matdesc)
            key, smk_id = self.materials[desc["queryId"]]
            if desc != {"queryId": desc["queryId"], "smkId": str(smk_id), "keySize": "128"}:
                return None, f"material descriptor {desc} does not match the issued material"
            meta = EncryptionMetadata(key=data["WrappedContentKey"]["EncryptedKey"],
                                      iv=data["ContentEncryptionIV"], matdesc=matdesc.decode())
            material = SnowflakeFileEncryptionMaterial(query_stage_master_key=key,
                                                       query_id=desc["queryId"], smk_id=smk_id)
            out = io.BytesIO()
            SnowflakeEncryptionUtil.decrypt_stream(meta, material, io.BytesIO(body), out)
        except Exception as e:  # noqa: BLE001 - every failure is a refused upload
            return None, f"cannot decrypt the upload: {type(e).__name__}: {e}"
        plain = out.getvalue()
        digest = base64.b64encode(hashlib.sha256(plain).digest()).decode()
        if headers.get(b"x-goog-meta-sfc-digest", b"").decode() != digest:
            return None, "sfc-digest is not the SHA-256 of the decrypted file"
        return plain, ""

    async def bucket_upload(self, scope, receive, send):
        body = await self.read_body(receive)
        headers = dict(scope["headers"])
        if self.stage_encryption == "full":
            plain, why = self.decrypt_upload(headers, body)
            if plain is None:
                self.uploads["refused"] += 1
                return await self.answer(send, 400, why.encode(), b"text/plain")
            self.uploads["decrypted"] += 1
            body = plain
        else:
            self.uploads["plain"] += 1
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
                 + [(b"content-length", str(len(body)).encode())]}
        return await self.forward(scope, body, receive, send)

    async def forward(self, scope, body: bytes, receive, send):
        """Hands a request whose body the gate has read to fakesnow, body first."""
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/tidemark-test/stats":
            stats = {"logins": self.logins, "uploads": self.uploads, "stage_encryption": self.stage_encryption}
            return await self.answer(send, 200, json.dumps(stats).encode())
        if scope["type"] == "http" and scope["path"].startswith("/fs_bucket/") and scope["method"] == "PUT":
            return await self.bucket_upload(scope, receive, send)
        if (scope["type"] == "http" and scope["path"] == "/queries/v1/query-request"
                and self.stage_encryption == "full"):
            return await self.query_with_material(scope, receive, send)
        if scope["type"] != "http" or scope["path"] != "/session/v1/login-request":
            return await self.app(scope, receive, send)
        body = await self.read_body(receive)
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
            return await self.answer(send, 200, payload)
        self.logins["ok"] += 1
        return await self.forward(scope, body, receive, send)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--account", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-env", help="environment variable holding the user's password")
    p.add_argument("--public-key", help="PEM public key registered for key-pair logins")
    p.add_argument("--stage-encryption", choices=["full", "sse"], default="full",
                   help="internal stage encryption to emulate (default full: SNOWFLAKE_FULL, client-side)")
    a = p.parse_args()
    password = os.environ.get(a.password_env) if a.password_env else None
    pem = open(a.public_key, "rb").read() if a.public_key else None
    app = LoginGate(fakesnow_app, a.account, a.user, password, pem, a.stage_encryption)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
