"""The Dagster layer, one folder per domain. Assets call core/ and adapters/; no maths here."""
