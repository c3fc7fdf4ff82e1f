"""Reputation providers: what outside databases say of our numbers. providers (the interface,
a generic HTTP JSON provider, vendor CSV lists), scanner (hourly and on-demand lookups within
the provider's rate limit, flags raised as alerts), repo (reputation_checks, with history)."""
