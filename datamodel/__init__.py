"""The data model every layer shares: errors, names, records, quantiles, run folders, stacks.

Nothing here imports workloads, profiling or cluster; they all import this.
"""
