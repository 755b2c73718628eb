"""Paper step 1: story files (characters + shots), their validation, content hashes and registry."""
