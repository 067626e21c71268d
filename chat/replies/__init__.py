"""The reply engine: admitting a reply, generating it, following its log, finishing it once.

service.py is what the views call; producer.py runs the model for one reply, pump.py writes every
local reply's deltas, reader.py (cluster_reader.py on a cluster) follows logs for this process's
clients, finish.py stores and bills a reply exactly once, runtime.py builds that machinery once
per process.
"""

from .service import Replies, ReplyError, continued, replies

__all__ = ["Replies", "ReplyError", "continued", "replies"]
