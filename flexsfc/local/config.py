"""Where one local runtime keeps its state: state file, control socket, logs, CNI records, pins.

One runtime per state directory. The default lives under /run/flexsfc/local; tests and benchmarks
pass their own directory, pin directory and namespace prefix so several runtimes can coexist.
"""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from flexsfc.model.constants import DEFAULT_LOCAL_STATE_DIR, DEFAULT_PIN_DIR

ENV_STATE_DIR = "FLEXSFC_LOCAL_DIR"
DEFAULT_RUNTIME_DIR = os.path.join(DEFAULT_LOCAL_STATE_DIR, "local")
DEFAULT_LOCAL_PIN_DIR = os.path.join(DEFAULT_PIN_DIR, "local")
CNI_BIN_DIR = "/opt/cni/bin"
CNI_PATH = "/opt/cni/bin:/usr/lib/cni"
CNI_PLUGIN = "flexsfc-cni"


@dataclass(frozen=True)
class RuntimeConfig:
    state_dir: str = DEFAULT_RUNTIME_DIR
    pin_dir: str = DEFAULT_LOCAL_PIN_DIR
    netns_prefix: str = "fx"  # pod namespaces are <prefix>-<pod name>

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
    def cni_state_dir(self) -> Path:
        return self.root / "cni"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(asdict(self)))

    @classmethod
    def for_dir(cls, state_dir: str | None = None) -> "RuntimeConfig":
        """The config of the runtime at `state_dir` (saved by `up`), or defaults for a new one."""
        directory = state_dir or os.environ.get(ENV_STATE_DIR) or DEFAULT_RUNTIME_DIR
        path = Path(directory) / "config.json"
        if path.exists():
            saved = json.loads(path.read_text())
            return cls(**{**saved, "state_dir": directory})
        return cls(state_dir=directory)
