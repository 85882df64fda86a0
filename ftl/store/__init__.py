"""The adapters a process holds open and the state behind them: PostgreSQL (db/), Redis hot state,
its key and channel names, the Lua scripts, leases, ticks, feature flags, rate limits, our signed
tokens and Google's keys (auth/), and Services, which bundles them for one process.

Imports only ftl.core; knows no game rule.
"""
