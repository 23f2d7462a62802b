"""Thin HTTP controllers, one module per resource; rules live in server.services."""
