"""flexsfc: scalable cloud-native Service Function Chains with flexible eBPF cross-connections."""

__version__ = "0.1.0"
