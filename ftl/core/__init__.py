"""The ground every other room stands on: settings (the only reader of os.environ), money in
integer cents, typed errors, logs, metric names, and the checks on text and JSON from outside.

Imports nothing else of ftl.
"""
