"""End-to-end helpers: the local runtime driven through the `flexsfc` CLI, as a user runs it.

Each test gets its own state directory, pin directory and namespace prefix, so tests can run while
other engineers run theirs; whatever happens, the fixture brings the runtime down and removes what
is left (processes, namespaces, links, pinned maps).
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flexsfc.local import control
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.runtime import read_state

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
FLEXSFC = str(Path(sys.executable).with_name("flexsfc"))


def copy_example(name: str, dest: Path, *, pre_stop_seconds: float | None = 1) -> Path:
    """The example's manifests with short preStop delays (keeps the suite fast), written to `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted((EXAMPLES / name).glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(src.read_text()) if d]
        for doc in docs:
            if doc.get("kind") != "Deployment" or pre_stop_seconds is None:
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                hook = (container.get("lifecycle") or {}).get("preStop")
                if hook:
                    hook["exec"]["command"] = ["sleep", str(pre_stop_seconds)]
        (dest / src.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return dest


@dataclass
class LocalRuntime:
    config: RuntimeConfig

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        options: list[str] = []
        if args[0] in ("up", "down", "scale", "status", "exec", "logs"):
            options += ["--state-dir", self.config.state_dir]
        if args[0] == "up":
            options += ["--pin-dir", self.config.pin_dir, "--netns-prefix", self.config.netns_prefix]
        argv = [FLEXSFC, args[0], *options, *args[1:]]  # options before a `-- command` of exec
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"}
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def up(self, path: Path) -> subprocess.CompletedProcess[str]:
        return self.cli("up", str(path))

    def request(self, op: str, **fields: Any) -> Any:
        return control.request(self.config, op, **fields)

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def state(self) -> dict[str, Any]:
        return read_state(self.config) or {}

    def pods(self, nf: str, phase: str | None = "running") -> list[dict[str, Any]]:
        return [
            p
            for p in self.state().get("pods", [])
            if p["nf"] == nf and (phase is None or p["phase"] == phase)
        ]


def leftovers(config: RuntimeConfig, state: dict[str, Any]) -> list[str]:
    """Everything a runtime could leave behind that still exists."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [
        f"netns {line.split()[0]}"
        for line in netns.splitlines()
        if line.startswith(config.netns_prefix + "-")
    ]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for pod in state.get("pods", []):
        for rec in pod.get("records", []):
            if f" {rec['hostIfname']}@" in links or f" {rec['hostIfname']}:" in links:
                found.append(f"link {rec['hostIfname']}")
        for proc in pod.get("processes", []):
            if os.path.exists(f"/proc/{proc['pid']}"):
                found.append(f"process {proc['pid']}")
    if os.path.exists(config.pin_dir):
        found.append(f"pin dir {config.pin_dir}")
    if os.path.exists(config.state_dir):
        found.append(f"state dir {config.state_dir}")
    return found
