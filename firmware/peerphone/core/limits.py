"""Every bound of the core, in one place; units last in the name (STYLE.md habit 6)."""

from __future__ import annotations

from dataclasses import dataclass, replace

PROTOCOL_VERSION = 2  # 2: stored entries carry their writer's seal

# Wire: UDP datagrams stay under a common path MTU so they are never fragmented.
DATAGRAM_BYTES_MAX = 1200
VIA_ENTRIES_MAX = 20  # hops a request may take: Chord needs about log2 N, 20 at a million nodes
DEST_ENTRIES_MAX = 32
TTL_INITIAL = 32
BODY_ITEMS_MAX = 64
HOST_CHARS_MAX = 64
REASON_CHARS_MAX = 128
SIGNATURE_BYTES_MAX = 512
VALUE_BYTES_MAX = 440  # with a 20-hop via list, a dictionary key and a seal, a store still fits one datagram
DICT_KEY_BYTES_MAX = 64
# A Tunnel with a 20-hop via list, a 64-bit transaction id and a client's admitting peer to
# answer through fits one datagram (1,174 bytes measured); SIP is cut into parts of this size.
TUNNEL_BYTES_MAX = 611
STAT_NAME_CHARS_MAX = 32  # a counter's name in a STAT answer
STAT_ITEMS_PER_PAGE = 12  # fingers and counters per STAT answer page: one datagram with room to spare

# Storage.
STORED_RESOURCES_MAX = 100_000
STORED_BYTES_MAX = 64 * 1024 * 1024  # value bytes held for others: a Pi has RAM to spare, not gigabytes
ENTRIES_PER_RESOURCE_MAX = 64
LIFETIME_S_MAX = 7 * 24 * 3600
WRITER_RESOURCES_MAX = STORED_RESOURCES_MAX // 10  # resources one writer may create on one peer
REGISTRATION_LIFETIME_S_MAX = 3600  # what the registrar grants; a stored registration lives no longer
# A storage time further ahead of the storing peer's clock would win over every later
# write for that long (a store at 2**53 ms locked a number for its lifetime).
STORAGE_TIME_AHEAD_MAX_MS = 60_000


# A client phone's one periodic request: its front's look at its registration (the audit,
# sip/front.py) every this often, which is also its keepalive (Timing.client_keepalive_ms).
# 45 s keeps an idle client within issue 14's 2 datagrams sent a minute with its
# registration's refresh, its look for kept messages and its reach check beside it
# (`tools/bench idle`); 30 s, the keepalive alone, would be 2.
CLIENT_KEEPALIVE_MS = 45_000


@dataclass(frozen=True, slots=True)
class Timing:
    """Protocol timers; a lab or simulator may shorten them, a Pi uses the defaults."""

    rpc_retransmit_first_ms: int = 250
    hop_ack_timeout_ms: int = 250  # above the round trip to a neighbour; the simulator's Internet wants more
    # A routed request's answer crosses several hops; hop acks catch a dead hop long
    # before this, so the end-to-end timer only needs to outlast a slow path.
    routed_retransmit_first_ms: int = 3000
    rpc_transmissions_max: int = 4
    maintenance_interval_ms: int = 1000
    fingers_fixed_per_round: int = 4
    fingers_probed_per_round: int = 4
    dedup_window_ms: int = 10_000
    leave_timeout_ms: int = 1500
    graveyard_keep_ms: int = 30 * 60 * 1000  # how long a failed node is asked again (partitions heal)
    # An attached client's keepalive: one ATTACH and its answer, after this long without a
    # request of its own through its peer. It keeps the NAT binding calls come in through:
    # RFC 4787 asks routers to keep a UDP mapping 2 minutes, most keep it a minute or more
    # (a few only 30 s: set it lower there).
    client_keepalive_ms: int = CLIENT_KEEPALIVE_MS
    # How often a node asks a neighbour to reach it from another port (a NAT or a firewall that
    # lets in only answers shows up as a missing datagram); after a change of address, sooner.
    reach_check_ms: int = 10 * 60 * 1000
    # How often a peer of an enrolled overlay fetches the authority's revocations: one FETCH a
    # minute, and a withdrawn node is shut out everywhere a minute after its revocation is stored.
    revocation_check_ms: int = 60_000

    def scaled(self, maintenance_interval_ms: int) -> "Timing":
        """Same ratios with a different maintenance period (lab and simulator)."""
        half = maintenance_interval_ms // 2
        return replace(
            self,
            maintenance_interval_ms=maintenance_interval_ms,
            rpc_retransmit_first_ms=max(20, min(self.rpc_retransmit_first_ms, half)),
            hop_ack_timeout_ms=max(20, min(self.hop_ack_timeout_ms, half)),
            routed_retransmit_first_ms=max(20, min(self.routed_retransmit_first_ms, maintenance_interval_ms * 2)),
            revocation_check_ms=self.revocation_check_ms * maintenance_interval_ms // self.maintenance_interval_ms,
        )


# Replication: the responsible node and its next two successors (issue 2).
REPLICAS = 3
REPLICA_PUSHES_IN_FLIGHT_MAX = 32  # copies on their way at once: a handover of thousands is paced
FULL_BACKOFF_MS = 60_000  # a peer that said it is full gets no copies for this long
SUCCESSORS_KEPT = 8
PEER_TABLE_MAX = 4096
GRAVEYARD_MAX = 64
DEDUP_ENTRIES_MAX = 8192
PENDING_TRANSACTIONS_MAX = 4096
FORWARDS_TRACKED_MAX = 4096  # forwarded requests awaiting their hop ack
HOP_WAIT_FACTOR_MAX = 4  # a slow neighbour is waited for up to this many times the configured hop wait
PROXIES_MAX = 1024  # client requests a Kademlia peer runs lookups for at once
HOP_ATTEMPTS_MAX = 3  # next hops tried for one forwarded request before the origin's retransmission
# Return routability (issue 11): addresses that answered one of our nonces, requests from
# unproven senders waiting for theirs, and the nonces out at once.
PROVEN_MAX = 4096
HELD_MAX = 256
HELD_PER_SOURCE_MAX = 4
VERIFYING_MAX = 64
# Identities (security.py): a certificate with a node id and a few user names is about 300
# bytes; a PROVE is padded to hold the largest certificate and its signature.
CERTIFICATE_BYTES_MAX = 512
PUBLIC_KEY_BYTES = 32  # Ed25519, raw
SIGNATURE_BYTES = 64  # Ed25519
PROOF_PADDING_BYTES = CERTIFICATE_BYTES_MAX + 64
CREDENTIALS_CACHED_MAX = 4096
SEALS_VERIFIED_MAX = 4096  # digests of seals verified: about half a megabyte
REVOCATIONS_KEPT_MAX = 4096  # withdrawn certificates a node remembers (revocation.py)

# Clients (attachment.py): what one peer admits, and when it forgets a silent one.
CLIENTS_MAX = 1024
CLIENT_SILENCE_KEEPALIVES = 3
ALTERNATES_MAX = 4  # peers an admitting peer names for its clients to fall back on
KEEPALIVE_SLACK_MS = 1000  # a keepalive waits this much past a request of the same period
REACH_WAIT_MS = 2000  # after the neighbour's answer, how long its datagram from the other port may take
REACH_MISSES = 2  # reach tests in a row without that datagram: unreachable
LINK_LOSS_TRANSMISSIONS = 3  # a request to a neighbour is a loss of the link once its first two went unanswered

# Kademlia (Maymounkov and Mazieres, IPTPS 2002).
K = 20      # bucket size, and how many closest nodes a lookup settles on (§2.3)
ALPHA = 3   # CLOSEST requests a lookup keeps in flight (§2.3)
REFRESH_ROUNDS = 60    # a bucket no lookup went through for this many rounds is refreshed (§2.3: an hour)
REFRESHES_PER_ROUND = 1
REPUBLISH_ROUNDS = 10  # rounds between republishing a key nobody stored meanwhile
NEIGHBOURHOOD_ROUNDS = 10  # rounds between lookups of our own id, which find nodes that joined near us
REPUBLISHES_PER_ROUND = 8
STEP_TRANSMISSIONS = 2  # a lookup has other nodes to ask: it gives up on a silent one sooner
SUCCESSORS_REPORTED = 8

# One-hop.
MEMBERS_PER_PAGE = 20  # NodeInfos per MEMBERS_ANS: one datagram even with IPv6 addresses

# Records of the SIP usages (usages.py).
URI_CHARS_MAX = 200
CONTENT_TYPE_CHARS_MAX = 64

# The SIP front (sip/front.py): what one peer holds for the phones it serves.
CONTACTS_PER_AOR_MAX = 8
BINDINGS_MAX = 10_000
# Server and client transactions together. At 200 calls/s over UDP a BYE's server
# transaction lives 64*T1 (Timer J) and its client one T4: about 7,400 at once.
SIP_TRANSACTIONS_MAX = 16_384
SIP_RESOLVING_MAX = 1024  # requests waiting for an overlay fetch or store at once (about 4 KiB each)
SIP_REGISTER_STORES_MAX = 128  # registration stores on their way; past it, stored behind (front.py)
SIP_RECENT_ANSWERS_MAX = 2048  # stateless answers kept for retransmissions (about 1 KiB each)
SIP_TCP_CONNECTIONS_MAX = 256
TUNNEL_REASSEMBLIES_MAX = 64

# Ingress rate limits (token buckets) for senders that have not answered our nonces: per
# host (any port) and per network (/24, /64); proven neighbours are not limited, so a flood
# never silences the maintenance that keeps a peer in its neighbours' tables.
INGRESS_RATE_PER_S = 5000
INGRESS_BURST = 1000
INGRESS_NETWORK_RATE_PER_S = 10_000
INGRESS_NETWORK_BURST = 2000
RATE_SOURCES_MAX = 4096
