"""Benchmarks of semstore (run as scripts: ``python bench/codec_quality.py --help``)."""
