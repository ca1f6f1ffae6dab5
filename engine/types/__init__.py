"""Field types (the registry a developer extends) and the column types they store as.

Layer: the lowest above `engine.errors`; knows nothing of setups, tables or requests.
"""
