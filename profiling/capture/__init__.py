"""Capture while a run goes: agents, psutil timelines, py-spy, memory snapshots, MLX facts."""
