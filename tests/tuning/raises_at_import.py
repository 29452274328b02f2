"""A task module that raises at import, as one needing a missing driver would."""

raise RuntimeError("no GPU driver here")
