"""`flexsfc agent --local --node NAME --control PATH`: the node agent reconciling a pushed picture.

Without Kubernetes there is nothing to watch: a front end (the local runtime's simulated nodes,
`flexsfc up --nodes N`) pushes the cluster picture to this socket (flexsfc.agent.picture_server)
and the agent reconciles it as the cluster's node agent reconciles what it watches. The node's
VXLAN device is created here, in the agent's network namespace (the node's); the reconciler hands
it and the nodes' addresses to the data plane with each push's topology.
"""

from typing import Any

from flexsfc.agent.locked import LockedDataplane
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.picture_server import PictureAgent, PictureServer, records_by_uid
from flexsfc.dataplane.vxlan import ensure_tunnel_device


class ControlPlane:
    """The agent loop over the opened data plane, its tunnel device and the control socket."""

    def __init__(
        self,
        dataplane: Any,
        *,
        node: str,
        control: str,
        state_dir: str,
        tunnel_device: str,
        tunnel_port: int,
    ) -> None:
        from flexsfc.cni.state import load_records

        self.dataplane = LockedDataplane(dataplane)
        self.loop = AgentLoop(self.dataplane)
        # The device exists before the first push: the reconciler attaches the data plane to it
        # (Dataplane.set_tunnel) and gives it the nodes' addresses with the push's topology.
        ensure_tunnel_device(tunnel_device, port=tunnel_port)
        self.agent = PictureAgent(
            self.loop,
            lambda: records_by_uid(load_records(state_dir)),
            node=node,
            tunnel_device=tunnel_device,
        )
        self.server = PictureServer(control, self.agent)

    def start(self) -> None:
        # Idle sessions and periodic resyncs (a missed push heals with the next one; the loop's own
        # pass catches what a failed step left).
        self.loop.start()
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.loop.stop()
