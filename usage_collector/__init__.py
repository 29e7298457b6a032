"""usage-collector: OpenAI organization usage and billed cost into Elasticsearch, exactly.

The command-line entry point is :mod:`usage_collector.cli`; the library surface is re-exported here.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
