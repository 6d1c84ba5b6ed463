"""The data model every layer shares: errors, records, quantiles, run folders, stacks.

Nothing here imports workloads, profiling or cluster; they all import this.
"""
