"""msgspec contracts: configuration, wire formats and checklist templates. Imports nothing of ours."""
