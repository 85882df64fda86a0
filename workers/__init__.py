"""Dramatiq actors (background work) and the clock; each actor a few lines calling ftl."""
