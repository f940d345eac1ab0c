"""The peer protocol: messages and their msgpack codec (the only msgpack import)."""

from .codec import check_body, decode, encode
from .messages import *  # noqa: F401,F403  (the message vocabulary is this package's API)

__all__ = ["check_body", "decode", "encode"]
