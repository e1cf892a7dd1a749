"""HTTP routes and the error envelope. Thin: parse, call the service, render."""
