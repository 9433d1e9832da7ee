"""Anycast over BGP: speakers (ExaBGP, BIRD 2) that announce the plan's anycast part, and
the applier that rate limits changes per session and orders drains (see README.md)."""
