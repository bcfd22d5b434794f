"""LivePulse: live-event engagement pipeline (ingest -> domain -> state -> outputs)."""

__version__ = "0.1.0"


def hot_path() -> str:
    """"compiled" where the mypyc build is installed (make fast, the container image; docs/performance.md "The compiled
    build"), "interpreted" for the plain-Python install: the same source either way, so reports say which one ran."""
    from streams import processor

    return "interpreted" if processor.__file__.endswith(".py") else "compiled"
