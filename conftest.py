"""Makes `configs` importable in tests (the repo root is the working directory of runs)."""
