"""Overlay topologies. Chord now; Kademlia and one-hop join them behind the same calls."""
