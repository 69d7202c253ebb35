"""The network set-ups the traffic sections measure: network-namespace "pods" joined by a direct
veth, a Linux bridge or a flexsfc cross-connection (built on flexsfc.testing.netlab)."""
