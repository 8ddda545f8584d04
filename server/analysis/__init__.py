"""From sampled frames to a verdict: faces, detector scores, aggregation. No aiohttp here."""
