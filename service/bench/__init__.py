"""Benchmarks (`agss-vos bench ...`): each compares two things in one run on the same machine."""
