"""Helpers of the tests on real sockets."""

from __future__ import annotations

from typing import Callable

from peerphone.app.identity import node_identity
from peerphone.core.peer import PeerConfig, PeerNode
from peerphone.core.wire.messages import Addr
from peerphone.net.udp import system_node_factory


def node_factory(config: PeerConfig) -> Callable[[Addr, int], PeerNode]:
    """A driver's node maker with a fresh identity (no state directory)."""
    return system_node_factory(config, node_identity(None, config.trust))
