"""Access: who is acting, the users service, and the scopes that turn a user's roles into
SQL conditions per entity and operation.

Layer: imports storage and below; records and processes ask it, never the other way round.
"""
