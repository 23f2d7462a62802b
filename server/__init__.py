"""The Litestar application: it composes schemas/, sync/ and media/ and owns the database."""
