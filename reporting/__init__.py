"""Public intake: report form and API, URL canonicalisation, dedup at intake, rate limits, receipts."""
