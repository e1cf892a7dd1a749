"""modelyard: a self-hosted serving platform that speaks the Databricks Model Serving API."""

__version__ = "0.1.0"
