"""Records: JSON Schemas, the list query language, and the records service (reads and
writes, always scoped by `engine.access`).

Layer: imports access and below.
"""
