"""Fake upstream providers: each speaks one provider's documented wire format, checks every
request against that provider's API reference, and records what strays from it."""
