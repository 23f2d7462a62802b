"""Domain operations, one module per concept: the only place rules live.

REST routes call them now; the sync mutation handlers call the same functions, so a rule has one path
whichever door a write comes in by. Each write function records its audit row in the same transaction.
"""
