"""The verdict on a finished run folder: latency attribution, findings, targets, statistics,
comparison and baselines. Pure: it reads run folders and needs no Ray.
"""
