"""Paper step 2: the clip corpus (ingest, split, manifest), its LanceDB index, search and shot retrieval."""
