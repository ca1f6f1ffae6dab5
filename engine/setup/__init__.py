"""The setup language: YAML source with line numbers, the meta-schema, the loader that
checks a setup and builds frozen spec objects, names, and the role language.

Layer: imports only `engine.types` and `engine.errors`; no SQL tables, no database.
"""
