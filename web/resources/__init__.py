"""Falcon resources, one module per family: parse, call ftl, map errors."""
