"""Credentials kept out of what flowtune records: lineage, model cards (published to a public bucket).

A URL can carry a secret in two places: its userinfo (`http://user:password@host`, a git remote
`https://x-access-token:TOKEN@github.com/...`) and its query string (`?token=...`, a presigned S3 URL's
`X-Amz-Signature` / `X-Amz-Credential`). `strip_credentials` removes both from one URL;
`scrub_urls` does it for every URL inside a string, list or dict, whatever key holds it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# scheme://anything up to whitespace, a quote or a bracket: a URL embedded in a sentence or a value
URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
SECRET_PARAMS = {"token", "access_token", "refresh_token", "id_token", "api_key", "apikey", "key", "secret",
                 "password", "pass", "pwd", "auth", "sig", "signature", "credential", "client_secret"}
SECRET_PARAM_PREFIXES = ("x-amz-", "x-goog-")  # presigned S3 / GCS URLs: signature, credential, token


def _secret_param(name: str) -> bool:
    name = name.lower()
    return name in SECRET_PARAMS or name.startswith(SECRET_PARAM_PREFIXES)


def strip_credentials(url: str) -> str:
    """`url` without userinfo and without query parameters that carry a secret; other parts unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url  # not a URL urllib can parse (e.g. a bad IPv6 literal): nothing we can rewrite
    netloc = parts.netloc.rpartition("@")[2]  # rpartition: a password may itself contain '@'
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, value) for name, value in pairs if not _secret_param(name)]
    if netloc == parts.netloc and len(kept) == len(pairs):
        return url  # nothing to remove: keep the exact spelling (re-encoding could normalise the query)
    query = urlencode(kept) if len(kept) != len(pairs) else parts.query
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub_urls(value):
    """`value` (str, list, tuple, dict; anything else as is) with every URL inside passed through
    `strip_credentials`. Dict keys are kept; lists stay lists."""
    if isinstance(value, str):
        return URL.sub(lambda match: strip_credentials(match.group(0)), value)
    if isinstance(value, dict):
        return {key: scrub_urls(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_urls(item) for item in value)
    return value
