"""Whole runs: the real model, Ray, the benchmarks' wiring, the GPU check, runs killed at random."""
