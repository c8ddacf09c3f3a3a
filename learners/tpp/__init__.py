"""Temporal point processes that learn from a drifting stream of event sequences (spec: prompttpp.md)."""

from learners.tpp.continual import ContinualTPP, NextEvent, Strategy
from learners.tpp.model import AttentionTPP
from learners.tpp.prompts import PromptPools
from learners.tpp.protocol import PeriodScores, ProtocolResult, run_protocol
from learners.tpp.sequences import EventSequenceLike

__all__ = [
    "AttentionTPP",
    "ContinualTPP",
    "EventSequenceLike",
    "NextEvent",
    "PeriodScores",
    "PromptPools",
    "ProtocolResult",
    "Strategy",
    "run_protocol",
]
