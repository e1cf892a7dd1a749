"""Request and response models of the wire contract (API.md), shared by every layer."""
