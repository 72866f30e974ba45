"""Hide the credentials in a source URL before it is printed, logged, published or recorded.

IP cameras are reached as ``rtsp://admin:s3cret@10.0.0.7/stream`` or ``http://cam/video.mjpg?user=admin&pwd=s3cret``
or with a signed ``?token=...``. A source's description travels far: every published frame's ``meta.source`` reaches
every subscriber, and status lines and logs end up in tickets. So the description a source carries is its spec with
the user-info and every token-like query value replaced by ``***``; only OpenCV, which must log in, sees the real URL.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# A query parameter whose name contains one of these carries a credential (password, passwd, pwd, api_key, apikey,
# access_token, sig, signature, X-Amz-Credential, auth, authorization, secret, session, user, username, login...).
# Over-redacting a harmless parameter costs a little readability; under-redacting leaks a password.
SECRET_WORDS = ("pass", "pwd", "token", "key", "sig", "auth", "secret", "credential", "session", "user", "login",
                "cookie", "code", "jwt", "hash")
# user-info as in scheme://user:password@host/..., for specs urlsplit cannot parse (a malformed IPv6 host, say).
_USERINFO = re.compile(r"(?P<head>^[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")
_QUERY_VALUE = re.compile(r"(?P<name>[^&;=?#]+)=(?P<value>[^&;#]*)")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter of this name holds a credential (case-insensitive substring match)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def _redact_query(query: str) -> str:
    """``a=1&password=x`` -> ``a=1&password=***``; parameter order and separators are kept."""
    def mask(match: re.Match[str]) -> str:
        name = match.group("name")
        return f"{name}={MASK}" if is_secret_name(name) and match.group("value") else match.group(0)

    return _QUERY_VALUE.sub(mask, query)


def redact(spec: str) -> str:
    """``spec`` with user-info and token-like query values masked; anything that is not a URL comes back unchanged.

    Never raises: a spec that is not a well-formed URL is masked by pattern instead (everything between ``://``
    and the last ``@`` of the authority, and every secret-named ``name=value``).
    """
    if "://" not in spec:
        return spec
    try:
        parts = urlsplit(spec)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
        return urlunsplit((parts.scheme, netloc, parts.path, _redact_query(parts.query),
                           _redact_query(parts.fragment)))
    except ValueError:
        masked = _USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@", spec, count=1)
        head, question, tail = masked.partition("?")
        return head + question + _redact_query(tail) if question else masked
