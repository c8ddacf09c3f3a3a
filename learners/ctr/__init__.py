"""Online recommendation with a collisionless embedding table (spec livestream.md §4): the table, the CTR /
watch-time learner over it, the live-only ranking of its scores, and the Diag-LinUCB bandit that explores fresh
streamers."""

from learners.ctr.linucb import DiagLinUCB
from learners.ctr.model import EmbeddingCTR
from learners.ctr.ranking import live_only
from learners.ctr.table import EmbeddingTable, TableDelta

__all__ = ["DiagLinUCB", "EmbeddingCTR", "EmbeddingTable", "TableDelta", "live_only"]
