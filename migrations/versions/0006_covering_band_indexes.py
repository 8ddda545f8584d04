"""covering band indexes for near-duplicate candidates

The four band indexes of frame_hashes also hold expires_at and check_id, so the candidate query
(model_ref = ? AND b_i IN (…) AND expires_at > ?, reading check_id) is answered from the index
alone instead of visiting one table row per band hit.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BANDS = ("b0", "b1", "b2", "b3")


def upgrade() -> None:
    for band in BANDS:
        op.drop_index(f"ix_frame_hashes_{band}", table_name="frame_hashes")
        op.create_index(
            f"ix_frame_hashes_{band}",
            "frame_hashes",
            ["model_ref", band, "expires_at", "check_id"],
            unique=False,
        )


def downgrade() -> None:
    for band in BANDS:
        op.drop_index(f"ix_frame_hashes_{band}", table_name="frame_hashes")
        op.create_index(f"ix_frame_hashes_{band}", "frame_hashes", ["model_ref", band], unique=False)
