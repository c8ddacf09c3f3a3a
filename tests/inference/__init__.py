"""Tests of inference/: rolling caches, the sequence recommender, the micro-batcher, the frame operators."""
