"""The market: the pure price and fill rules (rules.py, mirrored by lua/), scoring from match
stats and its weights, instruments, matches, price changes, quotes, the leaderboard, and the poller
that turns the live feed into prices.
"""
