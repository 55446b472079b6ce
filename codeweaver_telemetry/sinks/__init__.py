# SPDX-License-Identifier: MIT OR Apache-2.0
"""Sinks: each knows one destination and receives only finished, scrubbed batches."""
