"""Bounds on every field a peer sends: sizes, counts and physically plausible values.

A peer with a valid key can still send well-formed nonsense (a service time of a year,
10^300 prompts per second, a queue of 2^63); each bound here rejects such a message as
MALFORMED on receipt. Each is far above what an honest node produces, yet low enough that
the estimates built from peers' figures stay finite and meaningful. A sender whose own
measurement overshoots a bound (an arrival-rate burst, a hung model) must clamp it to the
bound before sealing, since the message class refuses to exist outside them.
"""

# ---- sizes ------------------------------------------------------------------------------

# Below py-libp2p's 1 MiB pubsub RPC cap, which also carries framing and other messages.
MAX_ENVELOPE_BYTES = 512 * 1024
# libp2p peer ids are ~52 base58 characters; leave room for other key types.
MAX_PEER_ID_CHARS = 128
# A host has a handful of interfaces, each listened on over ip4/ip6 and a transport or two.
MAX_LISTEN_ADDRS = 16
MAX_ADDR_CHARS = 256
# A node serves one model today; a few more leaves room for multi-model nodes.
MAX_MODELS = 16
MAX_MODEL_CHARS = 128
# Augmented prompts carry (k+1) answers of the previous layer; the envelope cap bounds them.
MAX_TEXT_CHARS = 200_000
MAX_QUERY_ID_CHARS = 64
MAX_CHAT_TURNS = 64
MAX_REASON_CHARS = 1024

# ---- presence: a node's load ------------------------------------------------------------

# Seconds between presences. Under 0.1 s a presence flood costs every node more than the
# news is worth; peers expire a sender after a few missed periods, so over 60 s a dead node
# would linger for minutes. (config.presence_interval_s defaults to 2 s.)
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 60.0
# An hour per prompt: far slower than any model anyone would offer to a swarm.
MAX_SERVICE_S = 3600.0
# The variance of service times that each lie in 0..MAX_SERVICE_S is at most a quarter of
# this; the square of the bound is the simple, generous bound.
MAX_SERVICE_VAR_S2 = MAX_SERVICE_S**2
# How many service times the mean and variance rest on; nodes keep a window of 64.
MAX_SERVICE_SAMPLES = 10**6
# Prompts a node holds at once. A million covers `dmoa-p2p simulate`'s "unbounded" queue
# (simulate.UNBOUNDED_QUEUE = 10^6); a real node defaults to 64. At least one: a node with
# no room at all does not advertise itself.
MAX_QUEUE_CAPACITY = 10**6
# Users' prompts per second at one node (offered and admitted). A thousand per second is
# orders of magnitude beyond what one LLM can serve, so admission's verdict is the same at
# the bound as above it; a burst measured over a short window can exceed it (clamp then).
MAX_RATE_PER_S = 1000.0

# ---- tasks ------------------------------------------------------------------------------

# Proposer layers are numbered 1..MAX_LAYERS (moa.MAX_LAYERS = 16) and traces number the
# final aggregation MAX_LAYERS + 1; no message needs a higher index.
MAX_LAYER = 16 + 1
# The answer length a proposer is asked for: 32k tokens, the largest common context window.
MAX_TASK_TOKENS = 32_768
# OpenAI's API allows 0..2; some local servers take more, nothing sensible is above 10.
MAX_TEMPERATURE = 10.0
# The origin derives each proposer's seed from 4 bytes of a hash (moa.engine.seed_for);
# most backends take a 32-bit seed.
MAX_SEED = 2**32 - 1
# How long a proposer may spend on a task: the asker's layer timeout, 300 s by default.
MAX_DEADLINE_S = 3600.0

# ---- proposals and refusals -------------------------------------------------------------

# Token counts of one call: a thousand times the largest context window.
MAX_TOKEN_COUNT = 10**7
# Time a proposal spent queued or being served. A task's deadline is at most an hour; a day
# leaves room for a backend that ignored cancellation, not for nonsense.
MAX_REPORTED_S = 86_400.0
# When a refusing peer suggests asking again; beyond an hour the suggestion means "never".
MAX_RETRY_AFTER_S = 3600.0
