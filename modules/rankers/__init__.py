"""Candidate rankers (`modules.ranking.Ranker`): each module registers itself with ``task="ranking"``."""
