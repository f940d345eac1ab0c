"""peerphone: SIP phones that need no server, on a peer-to-peer overlay."""

__version__ = "0.1.0"
