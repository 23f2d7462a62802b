"""Photos and blob storage for fivestep, kept free of any web framework."""
