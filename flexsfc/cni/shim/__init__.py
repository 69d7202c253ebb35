"""The node shim: the small static ``flexsfc-cni`` executable that passes CNI calls to the node agent."""
