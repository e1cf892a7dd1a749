"""The control plane: endpoint and token management, behind the REST API and the YAML file."""
