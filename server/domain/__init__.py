"""Pure domain rules: no database, no web framework; easy to test exhaustively."""
