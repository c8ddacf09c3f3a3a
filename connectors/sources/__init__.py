"""Sources of synthetic streams with a known answer (DESIGN.md §10): no dataset downloads here."""

from connectors.sources.sea import SEA_VARIANTS, drifting_sea

__all__ = ["SEA_VARIANTS", "drifting_sea"]
