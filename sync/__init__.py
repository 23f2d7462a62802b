"""Offline sync: the reconciliation rules (merge, cursor) and the reference device client.

Nothing here imports server/: the client speaks HTTP like a tablet, and the merge rules are pure.
"""
