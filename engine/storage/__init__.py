"""Storage: the database connection, the tables generated from a setup (entities, links,
the journal, users and tokens), and migrations that keep a database in step.

Layer: imports `engine.setup`, `engine.types`, `engine.errors`; never a request's user.
"""
