"""Who is calling: HTTP Basic against a user table, `X-Api-User-CN`, or the "inside" user.

On Grid'5000 the front proxy checks Basic credentials and passes the login in `X-Api-User-CN`; from a
frontend no credentials are needed. The testbed plays both parts: a request with Basic auth is checked
against the user table (401 on a wrong password or unknown login; with no table, any password is
accepted); a request with only `X-Api-User-CN` is that user; a request with neither is the inside user
(the local user name by default), so python-grid5000 with only a `uri` can submit jobs. `anonymous` (and
g5k-api's "no cn" values) may read but not write.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hmac
from dataclasses import dataclass, field

ANONYMOUS = "anonymous"
_NO_CN = {"", "unknown", "(unknown)"}


class AuthenticationFailed(Exception):
    """A 401: bad credentials (the proxy's answer; its exact body is unconfirmed)."""


def default_inside_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without passwd entry)
        return "root"


@dataclass
class AuthConfig:
    users: dict[str, str] | None = None  # login -> password; None accepts any password
    inside_user: str = field(default_factory=default_inside_user)

    def identify(self, authorization: str | None, user_cn: str | None) -> str:
        """The caller's login (lower case), or ANONYMOUS; raises AuthenticationFailed."""
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "basic":
                raise AuthenticationFailed("unsupported authorization scheme")
            try:
                login, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise AuthenticationFailed("malformed Basic credentials") from exc
            if not sep or not login:
                raise AuthenticationFailed("malformed Basic credentials")
            if self.users is not None:
                expected = self.users.get(login)
                if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
                    raise AuthenticationFailed("bad credentials")
            return login.lower()
        if user_cn is not None:
            cn = user_cn.strip().lower()
            return ANONYMOUS if cn in _NO_CN else cn
        return (self.inside_user or ANONYMOUS).lower()


def can_write(login: str) -> bool:
    return login != ANONYMOUS
