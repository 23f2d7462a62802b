"""Passwords, bearer tokens and signing: no database, no web framework."""
