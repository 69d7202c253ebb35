"""The Kubernetes front end: CRDs and deployment set (crds, deployset), the chain controller
(controller, controller_handlers) and the node-agent adapter (agent, agent_handlers, pods), both Kopf
operators started by `flexsfc operator controller|agent` (runner, kube). See docs/kubernetes.md.
"""
