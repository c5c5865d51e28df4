"""Tests of the pass families (one folder per family)."""
