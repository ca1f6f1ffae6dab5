"""Automations: what the system does by itself when records change, dates come or a
schedule fires — the outbox of events, the worker that runs them, their actions and the
channels they reach people by (in-app notifications, e-mail, webhooks).

Layer: above engine.process (an action creates, changes and moves records through the
same services a request uses), below engine.core.
"""
