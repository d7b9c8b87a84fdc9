"""Secrets out of sight: connection URLs as they may be shown in reprs, logs, status and errors."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

HIDDEN = "***"


def redact_url(url: str) -> str:
    """`url` with the password of its user part replaced by ***; unparseable text is hidden whole
    past its scheme, since a bad URL may still carry a secret. A sentinel URL's
    `sentinel_password` option is hidden too."""
    url = re.sub(r"([?&]sentinel_password=)[^&]*", rf"\g<1>{HIDDEN}", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        scheme, sep, _ = url.partition("://")
        return f"{scheme}{sep}{HIDDEN}" if sep else HIDDEN
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:{HIDDEN}@{host}").geturl()
