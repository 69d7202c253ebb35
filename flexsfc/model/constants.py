"""Names shared by every component: API group, labels, annotations, defaults."""

from typing import Final

API_GROUP: Final = "flexsfc.io"
API_VERSION: Final = "v1alpha1"
API_GROUP_VERSION: Final = f"{API_GROUP}/{API_VERSION}"

KIND_CHAIN: Final = "ServiceFunctionChain"
KIND_CROSS_CONNECTION: Final = "CrossConnection"
PLURAL_CHAIN: Final = "servicefunctionchains"
PLURAL_CROSS_CONNECTION: Final = "crossconnections"

# Label on NF pods (and their Deployment's pod template) naming the network function.
LABEL_NF: Final = "flexsfc.io/network-function"
# Label on CrossConnection objects naming the chain they belong to.
LABEL_CHAIN: Final = "flexsfc.io/chain"

# Multus annotations.
ANNOTATION_NETWORKS: Final = "k8s.v1.cni.cncf.io/networks"
ANNOTATION_NETWORK_STATUS: Final = "k8s.v1.cni.cncf.io/network-status"
# Written on NF pods by flexsfc-cni: JSON list of AttachmentRecord dicts.
ANNOTATION_INTERFACES: Final = "flexsfc.io/interfaces"

NAD_API_GROUP_VERSION: Final = "k8s.cni.cncf.io/v1"
KIND_NAD: Final = "NetworkAttachmentDefinition"

CNI_TYPE: Final = "flexsfc-cni"

# Linux IFNAMSIZ is 16 including the terminating NUL.
MAX_IFNAME_LEN: Final = 15

DEFAULT_MAGLEV_TABLE_SIZE: Final = 16381
ALLOWED_MAGLEV_TABLE_SIZES: Final = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521)
DEFAULT_SESSION_CAPACITY: Final = 1 << 20
# Idle timeouts of confirmed sessions (seconds), per protocol class, like conntrack's: TCP and SCTP a
# little over two hours (Linux sends its first TCP keepalive after 7200 s idle: a connection kept by
# keepalives is never reclaimed), UDP 120 s (conntrack's udp_timeout_stream), ICMP/ICMPv6/ARP 30 s
# (icmp_timeout), any other protocol 600 s (generic_timeout). Per chain: spec.settings.sessionTimeouts.
DEFAULT_SESSION_TIMEOUTS: Final = {"tcp": 7440, "udp": 120, "icmp": 30, "other": 600}
MAX_SESSION_TIMEOUT: Final = 7 * 24 * 3600  # a week: longer would only hold the table for dead flows
# How often the agent looks for idle sessions (seconds): a session is freed at most this long after
# its timeout.
SESSION_SWEEP_SECONDS: Final = 10.0

DEFAULT_PIN_DIR: Final = "/sys/fs/bpf/flexsfc"
DEFAULT_CNI_STATE_DIR: Final = "/var/lib/flexsfc/cni"
DEFAULT_LOCAL_STATE_DIR: Final = "/run/flexsfc"

# The node agent re-lists pods and CrossConnections this often: a DELETED event it missed heals then.
DEFAULT_AGENT_RELIST_SECONDS = 60.0

# Multi-node (docs/multinode.md): replicas on other nodes are reached through one VXLAN device per
# node in external (collect_md) mode with the group-policy extension (the sender's identity).
DEFAULT_TUNNEL_DEVICE: Final = "flexsfc-vx"
DEFAULT_TUNNEL_PORT: Final = 4789  # IANA VXLAN; set another where the node's own overlay uses it
TUNNEL_OVERHEAD: Final = 50  # bytes VXLAN over IPv4 adds: NF interfaces' MTU = underlay MTU - 50
