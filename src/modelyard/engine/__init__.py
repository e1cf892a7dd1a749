"""Local models: the model store (pull, verify, cache) and the worker that runs them."""
