"""Renderers of the verdict: terminal text, JSON, the HTML report, charts and flame graphs."""
