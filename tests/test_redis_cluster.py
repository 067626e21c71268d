"""The same guarantees on a real Redis Cluster (three masters, every chat's keys in one slot).

REDIS_URL names one node and the mode is detected (INFO cluster). The protocol, resume at every
offset, the hammer (finish once), stop, a dead producer, a SIGKILLed worker and a graceful stop
run here as they run on one Redis: the tests below are the same functions, collected again
with `redis_url` (and so `store`) pointing at the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

# The same tests, collected again in this module, so they run against the cluster.
from test_api import test_stop_ends_the_reply_cancelled_and_keeps_the_partial  # noqa: F401
from test_graceful import test_a_stopped_worker_lets_its_reply_finish_while_the_client_resumes_elsewhere  # noqa: F401
from test_gunicorn import gunicorn, test_sigkilled_producer_ends_interrupted_within_the_bound_and_readers_finish  # noqa: F401
from test_resume import (  # noqa: F401
    test_a_producer_that_stops_heartbeating_is_marked_interrupted,
    test_disconnect_after_every_event_then_resume_gives_exactly_the_stored_text,
    test_fifty_concurrent_resumes_while_the_reply_finishes_store_and_bill_once,
    test_many_finishers_at_once_record_exactly_one_outcome,
    test_second_tab_joining_mid_reply_ends_with_the_same_text,
)
from test_streams import (  # noqa: F401
    test_a_post_whose_place_is_refused_leaves_its_chat_free,
    test_a_resume_takes_its_place_and_reads_what_it_missed_at_once,
    test_a_retried_append_is_written_once,
    test_a_sealed_log_tells_a_retried_delta_that_landed_from_one_that_did_not,
    test_appending_to_a_log_redis_has_lost_is_refused,
    test_claim_and_create_starts_one_reply_per_chat_and_abandon_frees_the_chat,
    test_claim_live_is_exclusive_and_expires_without_heartbeat,
    test_newest_log_says_which_log_a_resume_follows_and_its_state,
    test_only_a_producer_gone_without_ending_its_log_is_stalled,
    test_sealed_stream_refuses_deltas_and_terminates_once,
    test_seals_and_heartbeats_survive_redis_forgetting_its_scripts,
)

from chat.replies.cluster_reader import ClusterStreamHub
from chat.streams import ClusterRedisStreams, StreamRef, chat_key
from helpers.chats import latest_reply, new_chat_id, post_chat, resume, wait_for
from helpers.cluster import RedisCluster
from helpers.sse import read_events


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(redis_cluster) -> str:
    redis_cluster.flush()
    return redis_cluster.url


def masters_holding(redis_cluster: RedisCluster, pattern: str) -> int:
    """How many masters hold a key matching `pattern`."""
    count = 0
    for node in redis_cluster.nodes():
        with node:
            count += bool(node.keys(pattern))
    return count


def chats_on_every_master(redis_cluster: RedisCluster, per_master: int) -> list[str]:
    """New chat ids, `per_master` of them on each master (random ones miss a master 2% of the time)."""
    with redis.Redis.from_url(redis_cluster.url) as node:
        masters = [(first, last) for first, last, *_ in node.execute_command("CLUSTER", "SLOTS")]
    picked: dict[tuple[int, int], list[str]] = {slots: [] for slots in masters}
    while any(len(chats) < per_master for chats in picked.values()):
        chat_id = new_chat_id()
        slot = key_slot(chat_id.encode())  # a chat's keys are tagged {chat_id}: its slot
        for (first, last), chats in picked.items():
            if first <= slot <= last and len(chats) < per_master:
                chats.append(chat_id)
    return [chat_id for chats in picked.values() for chat_id in chats]


def test_the_cluster_is_detected_and_chats_spread_over_its_masters(app_factory, redis_cluster):
    app = app_factory(DEMO_MODEL_WORDS=5)
    client = app.test_client()
    chats = chats_on_every_master(redis_cluster, 4)
    for chat_id in chats:
        read_events(post_chat(client, chat_id))
    runtime = app.extensions["replies"].runtime
    assert isinstance(runtime.backend, ClusterRedisStreams) and isinstance(runtime.hub, ClusterStreamHub)
    assert masters_holding(redis_cluster, "chat:*") == 3, "twelve chats land on every master"
    for chat_id in chats:
        assert latest_reply(app, chat_id).status == "complete"
    # Rate limits count in the cluster too (not in a process's memory).
    assert masters_holding(redis_cluster, "LIMITS*") >= 1


def test_a_reader_in_another_process_follows_through_shard_channels(app_factory, redis_cluster):
    """Two apps (two processes' worth of machinery): one produces, the other's client follows
    it live from a cursor, through its hub's shard subscriptions, and ends with the stored text."""
    producer_app = app_factory(DEMO_MODEL_WORDS=60, DEMO_MODEL_DELAY_MS=15)
    reader_app = app_factory()
    producer = producer_app.test_client()
    chat_id = new_chat_id()
    head = read_events(post_chat(producer, chat_id), stop_after=4)
    follower = reader_app.test_client()
    cookie = producer.get_cookie(producer_app.config["SESSION_COOKIE_NAME"])
    follower.set_cookie(cookie.key, cookie.value)
    rest = read_events(resume(follower, chat_id, head.last_id))
    stored = latest_reply(producer_app, chat_id)
    assert rest.terminal.json()["finishReason"] == "stop"
    assert head.text + rest.text == stored.content
    hub = reader_app.extensions["replies"].runtime.hub
    assert hub.listeners, "the follower's process read through shard channels"


def test_losing_the_subscribed_connections_mid_reply_loses_no_text(app_factory, redis_cluster):
    """Pub/sub delivers at most once: a dropped subscription is noticed, subscribed again and the
    gap read from the log, so the follower still gets every delta once, in order."""
    producer_app = app_factory(DEMO_MODEL_WORDS=120, DEMO_MODEL_DELAY_MS=10)
    reader_app = app_factory()
    producer = producer_app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(producer, chat_id), stop_after=2)
    follower = reader_app.test_client()
    cookie = producer.get_cookie(producer_app.config["SESSION_COOKIE_NAME"])
    follower.set_cookie(cookie.key, cookie.value)
    response = resume(follower, chat_id)
    head = read_events(response, stop_after=20)
    for node in redis_cluster.nodes():
        with node:
            node.client_kill_filter(_type="pubsub")
    rest = read_events(resume(follower, chat_id, head.last_id))
    ids = [event.id for event in head.events + rest.events]
    assert len(ids) == len(set(ids))
    wait_for(lambda: latest_reply(producer_app, chat_id).status == "complete")
    assert head.text + rest.text == latest_reply(producer_app, chat_id).content


def test_every_key_of_a_reply_is_on_the_master_of_its_chats_slot(store, redis_cluster):
    streams = store()
    ref = StreamRef("slot-check", "s1")
    streams.create(ref, {})
    streams.claim_live(ref, 5000)
    streams.request_cancel(ref)
    node = streams.node_of(chat_key(ref.chat_id, "live"))
    for other in redis_cluster.nodes():
        with other:
            name = (
                f"{other.connection_pool.connection_kwargs['host']}:{other.connection_pool.connection_kwargs['port']}"
            )
            keys = other.keys("chat:{slot-check}:*")
            assert (len(keys) == 4) if name == node else not keys
