"""The chain model: specs, manifest loading, validation and planning."""
