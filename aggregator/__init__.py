"""aggregator: a polite feed aggregator that groups the same story across outlets."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/aggregator-project/aggregator"
