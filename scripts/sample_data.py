"""Sample GLOBAL elements for `make run` (idempotent: INSERT IGNORE)."""

from __future__ import annotations

import random

import pymysql

from config import load_settings

CATEGORIES = ["security", "development", "process", "testing", "documentation"]
LEVELS = ["required", "recommended", "optional"]


def main() -> None:
    settings = load_settings()
    conn = pymysql.connect(
        database=settings.mysql.database, autocommit=True, **settings.mysql.connect_kwargs()
    )
    rng = random.Random(7)
    with conn.cursor() as cur:
        for i in range(200):
            chunk_id = f"sample_{i:04d}"
            category = rng.choice(CATEGORIES)
            cur.execute(
                "INSERT IGNORE INTO megamind_chunks (chunk_id, realm_id, content, element_category,"
                " priority_score, enforcement_level, criticality, applies_to, tags)"
                " VALUES (%s, 'GLOBAL', %s, %s, %s, %s, %s, '[\"python\"]', '[\"sample\"]')",
                (
                    chunk_id,
                    f"{category} rule {i}: keep it simple",
                    category,
                    f"{rng.randint(30, 100) / 100:.2f}",
                    rng.choice(LEVELS),
                    rng.choice(["critical", "high", "medium", "low"]),
                ),
            )
            cur.execute(
                "INSERT IGNORE INTO megamind_global_elements (element_id, chunk_id, title, summary,"
                " category) VALUES (%s, %s, %s, %s, %s)",
                (
                    f"ge_{i:04d}",
                    chunk_id,
                    f"{category.title()} rule {i}",
                    "sample element",
                    category,
                ),
            )
    conn.close()
    print(f"sample data: 200 GLOBAL elements in {settings.mysql.database}")


if __name__ == "__main__":
    main()
