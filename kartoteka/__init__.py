"""Kartoteka: a YAML setup becomes a business database with a validated REST API.

The command line lives here (`kartoteka.cli`); the engine is the `engine` package and
the HTTP layer the `api` package.
"""

__version__ = "0.1.0"
