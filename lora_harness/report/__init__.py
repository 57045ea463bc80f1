"""Reports read only the score store (or CSVs in the research's layout), never the judges."""
