"""Trading: open, close and modify (trades.py), positions, wallets, the portfolio, margin (margin/),
full time and the referral payout a first trade earns.
"""
