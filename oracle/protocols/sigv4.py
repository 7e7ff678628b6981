"""AWS Signature Version 4, checked the way an AWS service checks it, for the oracle's Bedrock stand-in.

``parse_authorization`` reads ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/date/region/service/
aws4_request, SignedHeaders=a;b, Signature=hex`` and says what is missing or malformed; ``signature``
recomputes the signature from the request and a secret key (canonical request, string to sign, derived key),
so a server that knows the secret can tell a correctly signed request from one merely shaped like it. Pure
functions of their arguments, stdlib only; no clock (callers compare ``X-Amz-Date`` with theirs).

Canonical URI: every non-S3 service signs the path URI-encoded twice; the path as received is encoded once
(``/model/anthropic.claude%3A0/converse``), so it is encoded once more here.

    >>> parse_authorization("Bearer abc")
    'Authorization header requires the AWS4-HMAC-SHA256 scheme'
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
_PARAM = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class SigV4Header:
    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(header: str | None) -> SigV4Header | str:
    """The parsed header, or what an AWS service says is wrong with it."""
    if not header:
        return "Missing Authentication Token"
    if not header.startswith(ALGORITHM + " "):
        return f"Authorization header requires the {ALGORITHM} scheme"
    params = dict(_PARAM.findall(header))
    for name in ("Credential", "SignedHeaders", "Signature"):
        if name not in params:
            return f"Authorization header requires '{name}' parameter. Authorization={header.split(' ', 1)[0]}"
    credential = params["Credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request" or not _DATE.match(credential[1]):
        return "Credential should be of the form <access key>/<date>/<region>/<service>/aws4_request"
    if not _SIGNATURE.match(params["Signature"]):
        return "Signature must be 64 lower-case hex digits"
    signed = tuple(params["SignedHeaders"].split(";"))
    return SigV4Header(credential[0], credential[1], credential[2], credential[3], signed, params["Signature"])


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def canonical_query(query: Mapping[str, list[str]]) -> str:
    pairs = sorted((quote(name, safe="-_.~"), quote(value, safe="-_.~")) for name in query for value in query[name])
    return "&".join(f"{name}={value}" for name, value in pairs)


def signature(
    auth: SigV4Header,
    secret_key: str,
    method: str,
    raw_path: str,
    query: Mapping[str, list[str]],
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """The hex signature AWS computes for this request; ``headers`` keys lower case, ``x-amz-date`` among them."""
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in auth.signed_headers
    )
    payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        [
            method,
            quote(raw_path or "/", safe="/~"),
            canonical_query(query),
            canonical_headers,
            ";".join(auth.signed_headers),
            payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, headers.get("x-amz-date", ""), auth.scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), auth.date)
    for part in (auth.region, auth.service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
