"""Replication: the one HTTP fetcher, pull and its checks, remotes, summaries and static deltas.

Built on the object store (the modules of `store`); nothing in the object store imports
from here."""
