"""asyncio/uvloop drivers of the sans-I/O core."""
