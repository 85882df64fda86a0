"""Margin (SPEC §1.5, §5.4): the pure replay (replay.py) and, around it, one module per idea: the
evaluator that loads, replays and commits (evaluator.py, from snapshots.py and tick_logs.py), safe
boxes, follow-up passes, the backstop sweep, and the outbox of margin events and washout emails.
"""
