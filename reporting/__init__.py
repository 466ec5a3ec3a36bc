"""Public intake: report form and API, canonical URLs, dedup at intake, rate limits, receipts."""
