"""Margin (SPEC §1.5): the pure replay (replay.py) and the service that loads, replays and
commits.
"""
