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

DEFAULT_PIN_DIR: Final = "/sys/fs/bpf/flexsfc"
DEFAULT_CNI_STATE_DIR: Final = "/var/lib/flexsfc/cni"
DEFAULT_LOCAL_STATE_DIR: Final = "/run/flexsfc"
