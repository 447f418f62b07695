"""The catalogue's Postgres schemas.

The tables are described once, by the hand-written Alembic revisions in `migrations/` (a test
checks the migrated tables); the code reads and writes them in SQL. Three schemas:
- `raw`: what was collected, as Instagram gave it (accounts, posts, images, refused inputs).
- `catalogue`: what people and models decided about it (taxonomy, labels, models).
- `marketplace`: what the marketplace reads (one product row per catalogued image).
"""

from __future__ import annotations

SCHEMAS = ("raw", "catalogue", "marketplace")
