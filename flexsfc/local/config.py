"""Where one local runtime keeps its state: state file, control socket, logs, CNI records, pins.

One runtime per state directory. Its pin directory and pod namespace prefix follow the state
directory unless given explicitly (`flexsfc up --pin-dir/--netns-prefix`): the default directory
keeps the historical names (/sys/fs/bpf/flexsfc/local, `fx`), any other directory gets names
derived from a digest of its real path, so two runtimes started with different `--state-dir` never
share a data plane or a namespace name. `flexsfc.local.locks` enforces it for explicit names.
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from flexsfc.model.constants import DEFAULT_LOCAL_STATE_DIR, DEFAULT_PIN_DIR

ENV_STATE_DIR = "FLEXSFC_LOCAL_DIR"
DEFAULT_RUNTIME_DIR = os.path.join(DEFAULT_LOCAL_STATE_DIR, "local")
DEFAULT_LOCAL_PIN_DIR = os.path.join(DEFAULT_PIN_DIR, "local")
DEFAULT_NETNS_PREFIX = "fx"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_PATH = "/opt/cni/bin:/usr/lib/cni"
CNI_PLUGIN = "flexsfc-cni"


class ConfigError(ValueError):
    """Options that contradict the runtime already living in the state directory."""


def state_dir_digest(state_dir: str) -> str:
    """Hex digest of the state directory's real path: the same directory always gives the same one."""
    return hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()


@dataclass(frozen=True)
class RuntimeConfig:
    state_dir: str = DEFAULT_RUNTIME_DIR
    pin_dir: str = DEFAULT_LOCAL_PIN_DIR
    # Pod namespaces are <prefix>-<namespace>.<pod name>: a Kubernetes namespace is a DNS label
    # (no '.'), so the first '.' ends it and no two (namespace, pod) pairs share a name.
    netns_prefix: str = DEFAULT_NETNS_PREFIX
    # Simulated nodes (`flexsfc up --nodes N`, flexsfc.local.nodes); 1: this machine is the one node.
    nodes: int = 1

    @property
    def root(self) -> Path:
        return Path(self.state_dir)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def socket_path(self) -> Path:
        return self.root / "control.sock"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pods_dir(self) -> Path:
        return self.root / "pods"

    @property
    def cni_state_dir(self) -> Path:
        return self.root / "cni"

    @property
    def cni_socket(self) -> Path:
        """The CNI socket the supervisor serves as this runtime's node agent (the shim's peer)."""
        return self.root / "cni.sock"

    @property
    def cni_delete_queue(self) -> Path:
        """Where the shim queues a DEL while no supervisor serves the CNI socket."""
        return self.root / "cni-del-queue"

    @property
    def cni_node_file(self) -> Path:
        """The node-level flexsfc-cni configuration of this runtime (FLEXSFC_CNI_CONF for the shim)."""
        return self.root / "cni.conf"

    @property
    def manifests_dir(self) -> Path:
        """The manifests applied per namespace: what a new supervisor rebuilds the runtime from."""
        return self.root / "manifests"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def supervisor_lock(self) -> Path:
        """Held (flock) by the supervisor for its whole life: one supervisor per state directory."""
        return self.root / "supervisor.lock"

    @property
    def start_lock(self) -> Path:
        """Held by a command while it decides to start a supervisor and brings it up."""
        return self.root / "start.lock"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    def netns_name(self, namespace: str, pod: str) -> str:
        return f"{self.netns_prefix}-{namespace}.{pod}"

    def log_path(self, namespace: str, pod: str) -> Path:
        return self.logs_dir / namespace / f"{pod}.log"

    def workdir(self, namespace: str, pod: str) -> Path:
        return self.pods_dir / namespace / pod

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(asdict(self)))

    @classmethod
    def derived(cls, state_dir: str) -> "RuntimeConfig":
        """A new runtime at `state_dir`: pin directory and namespace prefix follow the directory."""
        if os.path.realpath(state_dir) == os.path.realpath(DEFAULT_RUNTIME_DIR):
            return cls(state_dir=state_dir)
        digest = state_dir_digest(state_dir)
        return cls(
            state_dir=state_dir,
            pin_dir=os.path.join(DEFAULT_PIN_DIR, f"local-{digest[:12]}"),
            netns_prefix=f"{DEFAULT_NETNS_PREFIX}{digest[:6]}",
        )

    @classmethod
    def for_dir(cls, state_dir: str | None = None) -> "RuntimeConfig":
        """The config of the runtime at `state_dir` (saved by `up`), or the derived one for a new one."""
        directory = state_dir or os.environ.get(ENV_STATE_DIR) or DEFAULT_RUNTIME_DIR
        path = Path(directory) / "config.json"
        if path.exists():
            saved = json.loads(path.read_text())
            return cls(**{**saved, "state_dir": directory})
        return cls.derived(directory)

    def with_options(
        self, pin_dir: str | None, netns_prefix: str | None, nodes: int | None = None
    ) -> "RuntimeConfig":
        """This config with explicit `--pin-dir`/`--netns-prefix`/`--nodes`; a runtime that exists
        keeps its own."""
        wanted = replace(
            self,
            pin_dir=pin_dir or self.pin_dir,
            netns_prefix=netns_prefix or self.netns_prefix,
            nodes=nodes or self.nodes,
        )
        if wanted != self and self.config_file.exists():
            raise ConfigError(
                f"the runtime in {self.state_dir} uses pin directory {self.pin_dir}, namespace prefix "
                f"{self.netns_prefix!r} and {self.nodes} node(s); drop --pin-dir/--netns-prefix/--nodes, "
                "or `flexsfc down` it first"
            )
        return wanted
