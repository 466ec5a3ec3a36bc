"""Who must hear of a confirmed target and whether they acted: routing, deliveries, re-checks."""
