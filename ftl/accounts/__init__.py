"""Accounts: users and their wallets' first rows, registration, sessions, referrals and the email
outbox.
"""
