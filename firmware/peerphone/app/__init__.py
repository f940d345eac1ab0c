"""The composition root: configuration, identity, wiring and the `peerphone` command."""
