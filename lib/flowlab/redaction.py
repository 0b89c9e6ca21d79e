"""Secrets in URLs: find them, refuse them at the door, and mask them wherever a URL is written out.

A base URL such as ``https://user:pass@host/?api_token=…`` would travel into ``targets.json``, curl and
Postman exports, error messages, logs and run metadata: every place Flow Lab writes a URL. So each entry
(``Settings``, the target form, the clients, the CLI) refuses a base URL with userinfo or a secret-looking
query parameter and says where the secret belongs, and every sink still passes URLs through
``redact_url`` / ``redact_text`` as a second line of defence. Path segments cannot be told apart from
secrets and are kept as they are.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["MASK", "SECRET_PARAMS", "WHERE_SECRETS_GO", "redact_text", "redact_url", "secret_parts"]

MASK = "***"

#: Query parameter names treated as secrets, compared lower-case with ``-``, ``_`` and ``.`` removed.
SECRET_PARAMS = frozenset(
    {
        "accesskey", "accesstoken", "apikey", "apitoken", "auth", "authorization", "authtoken", "bearer",
        "clientsecret", "code", "credential", "credentials", "idtoken", "jwt", "key", "pass", "passwd",
        "password", "privatekey", "pwd", "refreshtoken", "secret", "secretkey", "session", "sessionid",
        "sessiontoken", "sig", "signature", "token", "xamzcredential", "xamzsecuritytoken",
        "xamzsignature",
    }
)  # fmt: skip
#: Name endings that make any parameter a secret (``sas_token``, ``app_secret``…); ``key`` alone is not one
#: (``client_key`` is Sitecore's public client key).
_SECRET_ENDINGS = ("token", "secret", "password", "passwd", "signature", "apikey", "privatekey", "secretkey")

#: What to do instead, for messages that refuse a URL.
WHERE_SECRETS_GO = (
    "put the client key in FLOWLAB_CLIENT_KEY (or the target form's client key field) and tokens in "
    "FLOWLAB_API_TOKEN (or Streamlit secrets, .streamlit/secrets.toml); never in the URL"
)

#: A URL in free text; trailing punctuation (``url: reason``, ``url.``) is not part of it.
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>`]*[^\s'"<>`.,:;!?)\]}]""")


def _secret_name(name: str) -> bool:
    norm = re.sub(r"[-_.\s]", "", name.lower())
    return norm in SECRET_PARAMS or norm.endswith(_SECRET_ENDINGS)


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts


def secret_parts(url: str) -> list[str]:
    """What in ``url`` is secret, as phrases for a message: ``"a user name and password (user:pass@)"``,
    ``"the query parameter 'api_token'"``. Empty when the URL carries nothing secret."""
    parts = _split(url)
    if parts is None:
        return ["an address that cannot be read as a URL"] if "@" in url else []
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found.append("a password (user:pass@)" if ":" in userinfo else "a user name (user@)")
    for where, text in (("query parameter", parts.query), ("fragment parameter", parts.fragment)):
        names = [k for k, _ in parse_qsl(text, keep_blank_values=True) if _secret_name(k)]
        found += [f"the {where} '{name}'" for name in dict.fromkeys(names)]
    return found


def _mask_pairs(text: str) -> str:
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(_secret_name(k) for k, _ in pairs):
        return text
    return "&".join(f"{quote(k, safe='')}={MASK if _secret_name(k) else quote(v, safe='')}" for k, v in pairs)


def redact_url(url: str) -> str:
    """``url`` with its userinfo and the values of secret-looking parameters replaced by ``***``.

    A URL with nothing secret comes back unchanged (character for character), so redacting is safe to
    apply everywhere; one that cannot be parsed but has an ``@`` in it is masked whole.
    """
    parts = _split(url)
    if parts is None:
        return MASK if "@" in url else url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query, fragment = _mask_pairs(parts.query), _mask_pairs(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (error messages, log lines, exception strings)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
