"""The query pipeline: auth, endpoint lookup, routing, provider call. No HTTP here."""
