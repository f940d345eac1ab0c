"""Digest authentication of REGISTER at the front (RFC 3261 §22, RFC 7616's computation,
RFC 8760's SHA-256 for SIP with MD5 kept for old phones). Sans-I/O: the secret that keys
the nonces comes from the front's entropy, the time from its `now_ms`.

The front holds the credentials of the users it registers (`Credentials`); it challenges a
REGISTER without a usable Authorization (401), refuses a wrong one (403), and counts the
failures of each source host in a token bucket, so a guesser is slowed to a few tries a
second without locking out the real user, who registers from another host.

Nonces are stateless: the time they were made and an HMAC over it and the realm. A nonce
older than `NONCE_LIFETIME_MS` is answered 401 with stale=true and a fresh one (§22.4:
the phone retries without asking its user). A captured Authorization can be replayed
within a nonce's lifetime; REGISTER is idempotent and names the contact it binds, so a
replay binds only what the real user bound.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from enum import Enum

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..core.ingress import TokenBuckets
from ..core.security import SigningKey

NONCE_LIFETIME_MS = 300_000
ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}  # the order we offer them in (RFC 8760 §2.4)
FAILURES_PER_S = 2  # wrong answers a source host may make, after a burst of
FAILURES_BURST = 10
FAILURE_SOURCES_MAX = 4096
AUTHORIZATION_CHARS_MAX = 2048
_PARAMS_MAX = 16
USER_KEY_WORK = 2**14  # scrypt's N: 16 MiB and 35 ms here, once per user and front start


class Verdict(Enum):
    OK = "ok"
    CHALLENGE = "challenge"  # none, or one for another realm: 401
    WRONG = "wrong"          # a wrong answer, or another user's name: 403
    SLOWED = "slowed"        # this host answered wrong too often lately: 403 without a look
    STALE = "stale"          # a nonce of ours, too old: 401 with stale=true


Credentials = dict[str, str]
"""Users and their passwords (what a front registers), by AOR as `sip:user@domain`."""


class DigestAuth:
    def __init__(self, credentials: Credentials, realm: str, secret: bytes) -> None:
        self.credentials = credentials
        self.realm = realm
        self._secret = secret
        self._failures = TokenBuckets[str](FAILURES_PER_S, FAILURES_BURST, FAILURE_SOURCES_MAX)
        self._user_keys: dict[str, SigningKey] = {}

    def user_key(self, aor: str) -> SigningKey | None:
        """The key that signs `aor`'s registrations (None: not our user). Derived once per user."""
        key = self._user_keys.get(aor)
        if key is None and aor in self.credentials:
            key = self._user_keys[aor] = user_key(aor, self.credentials[aor])
        return key

    def challenges(self, now_ms: int, *, stale: bool = False, proxy: bool = False) -> list[tuple[str, str]]:
        """WWW-Authenticate headers (Proxy-Authenticate with `proxy`), SHA-256 first."""
        nonce = self._nonce(now_ms)
        extra = ", stale=true" if stale else ""
        return [("Proxy-Authenticate" if proxy else "WWW-Authenticate",
                 f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={name}, qop="auth"{extra}')
                for name in ALGORITHMS]

    def check(self, method: str, aor: str, authorization: str | None, source: str, now_ms: int) -> Verdict:
        if authorization is None:
            return Verdict.CHALLENGE
        params = parse_digest(authorization)
        if params is None or params.get("realm") != self.realm:
            return Verdict.CHALLENGE
        nonce = params.get("nonce", "")
        made_ms = self._nonce_time(nonce)
        if made_ms is None:
            return Verdict.CHALLENGE
        if not self._failures.would_allow(source, now_ms=now_ms):
            return Verdict.SLOWED
        if now_ms - made_ms > NONCE_LIFETIME_MS or made_ms > now_ms:
            return Verdict.STALE
        if self._answer_holds(method, aor, params):
            return Verdict.OK
        self._failures.allow(source, now_ms=now_ms)  # one token per failure
        return Verdict.WRONG

    def _answer_holds(self, method: str, aor: str, p: dict[str, str]) -> bool:
        algorithm = ALGORITHMS.get(p.get("algorithm", "MD5").upper())
        user, password = p.get("username"), self.credentials.get(aor)
        if algorithm is None or password is None or user is None or f"sip:{user}@{_domain(aor)}" != aor:
            return False

        def h(text: str) -> str:
            return algorithm(text.encode()).hexdigest()

        ha1 = h(f"{user}:{self.realm}:{password}")
        ha2 = h(f"{method}:{p.get('uri', '')}")
        qop = p.get("qop")
        if qop == "auth":
            expected = h(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
        elif qop is None:
            expected = h(f"{ha1}:{p['nonce']}:{ha2}")  # RFC 2069, as RFC 3261 still allows
        else:
            return False
        return hmac.compare_digest(expected, p.get("response", "").lower())

    def _nonce(self, now_ms: int) -> str:
        stamp = format(now_ms, "x")
        return f"{stamp}.{self._mac(stamp)}"

    def _nonce_time(self, nonce: str) -> int | None:
        stamp, _, mac = nonce.partition(".")
        if not (0 < len(stamp) <= 16 and all(c in "0123456789abcdef" for c in stamp)):
            return None
        return int(stamp, 16) if hmac.compare_digest(mac, self._mac(stamp)) else None

    def _mac(self, stamp: str) -> str:
        return hmac.new(self._secret, f"{stamp}:{self.realm}".encode(), hashlib.sha256).hexdigest()[:32]


def user_key(aor: str, password: str) -> SigningKey:
    """The user's signing key, from the password: every front that holds it derives the same
    key, so the overlay sees one owner of the AOR wherever the phone registers. scrypt makes
    a guess cost what it costs against the digest exchange's MD5 many times over (the public
    key is in the overlay for anyone to guess against): a weak password stays weak."""
    seed = Scrypt(salt=b"peerphone user key " + aor.encode(), length=32, n=USER_KEY_WORK, r=8, p=1)
    return SigningKey(seed.derive(password.encode()))


@functools.lru_cache(maxsize=1024)
def open_key(aor: str) -> SigningKey:
    """The key of an AOR registered at an open front: anyone can derive it, so it keeps the
    AOR from nobody; it lets the phone move between open fronts, and loses to a user's key
    that got the AOR first."""
    return SigningKey(hashlib.sha256(b"peerphone open key " + aor.encode()).digest())


def _domain(aor: str) -> str:
    return aor.rpartition("@")[2]


def parse_digest(value: str) -> dict[str, str] | None:
    """The parameters of a `Digest` Authorization (names lower-cased), or None for anything
    else; hostile input: bounded, never raises."""
    if len(value) > AUTHORIZATION_CHARS_MAX:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            return None
        name = rest[i:eq].strip().lower()
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            end = rest.find('"', i + 1)
            if end < 0:
                return None
            val, i = rest[i + 1:end], end + 1
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            val, i = rest[i:end].strip(), end
        if not name or name in params or len(params) >= _PARAMS_MAX:
            return None
        params[name] = val
    return params if "nonce" in params and "response" in params else None
