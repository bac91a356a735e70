"""Repository tools that are not part of the installed package (test and benchmark corpora)."""
