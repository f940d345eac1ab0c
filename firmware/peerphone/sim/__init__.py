"""The deterministic simulator: the real core at 1,000 to 100,000 nodes on a virtual clock."""
