"""Processes over records: stage moves, the timeline, and reports (board, funnel).

Layer: imports records and below, through `Records`' public read API.
"""
