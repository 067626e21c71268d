"""What every request and page shares: protections and headers (security.py), metrics
(metrics.py), structured logs (structured_logs.py), Markdown rendering (markdown.py), exports
(export.py)."""
