"""HTTP adapter (aiohttp): health, readiness and metrics. Translates, decides nothing."""
