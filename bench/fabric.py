"""Queue fabric throughput: publish, deliver and acknowledge, against raw nats-py as reference.

Run with ``.venv/bin/python -m bench.fabric``; a bench driver calls :func:`run`.

Four measurements, each the best of ``rounds``. NATS fabric and raw rounds are interleaved,
and which goes first alternates, so a burst of load on the machine hits both sides alike:

* **memory**: the in-memory fabric end to end, from the first publish to the last
  acknowledgement, one group with one member.
* **nats fabric publish / consume**: a group's durable consumer exists but has no member while
  ``N`` messages are published by ``concurrency`` concurrent publishers (each publish waits for
  JetStream's ack); then a member joins and the time to handle and acknowledge all ``N`` is
  measured.
* **raw nats-py**: the same stream configuration, consumer, payload and publisher concurrency,
  written directly against nats-py: ``js.publish`` from ``concurrency`` publishers, then
  ``fetch(batch)`` and ``ack`` in a loop. The ratios fabric / raw compare these two.
* **raw publish_async** (for information): nats-py's pipelined publishing, which has no
  per-message await and so is the ceiling of what a client can push.

Each figure is given by wall clock and per CPU-second of this process (see :class:`Rate`).
Everything is bounded in message count and in time (``time_limit`` per measurement).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from runtime.fabric import Message, open_fabric
from runtime.fabric._naming import stream_name, subject

__all__ = ["main", "run"]

NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class Rate:
    """Messages per wall-clock second, and per second of this process's CPU time.

    On a busy machine the wall-clock rate swings with other load; the CPU rate counts only the
    work this process did for the messages, which is what a fabric / raw ratio is about.
    """

    wall: float
    cpu: float

    @staticmethod
    def best(rates: list[Rate]) -> Rate:
        return Rate(max(r.wall for r in rates), max(r.cpu for r in rates))


class _Stopwatch:
    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def rate(self, count: int) -> Rate:
        wall = time.perf_counter() - self._wall
        cpu = max(time.process_time() - self._cpu, 1e-9)
        return Rate(count / wall, count / cpu)


async def _publish_concurrently(
    count: int, concurrency: int, publish: Callable[[], Awaitable[Any]]
) -> Rate:
    """The rate of ``count`` publishes made by ``concurrency`` publishers."""

    async def publisher(share: int) -> None:
        for _ in range(share):
            await publish()

    shares = [
        count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)
    ]
    watch = _Stopwatch()
    await asyncio.gather(*(publisher(share) for share in shares if share))
    return watch.rate(count)


async def _memory_end_to_end(count: int, payload: bytes) -> Rate:
    async with open_fabric("memory://", capacity=max(10_000, count)) as fabric:
        done = asyncio.Event()
        handled = 0

        async def handler(msg: Message) -> None:
            nonlocal handled
            handled += 1
            if handled == count:
                done.set()

        await fabric.subscribe("bench.memory", handler, group="bench")
        watch = _Stopwatch()
        for _ in range(count):
            await fabric.publish("bench.memory", payload)
        await done.wait()
        return watch.rate(count)


async def _nats_fabric(
    url: str, prefix: str, count: int, payload: bytes, concurrency: int, batch: int
) -> tuple[Rate, Rate]:
    topic = f"bench.fabric.{uuid.uuid4().hex[:8]}"
    async with open_fabric(url, prefix=prefix, capacity=count * 2, fetch_batch=batch) as fabric:
        done = asyncio.Event()
        handled = 0

        async def handler(msg: Message) -> None:
            nonlocal handled
            handled += 1
            if handled == count:
                done.set()

        # A member joins and leaves: the group's durable consumer now holds what is published.
        await (await fabric.subscribe(topic, handler, group="bench")).close()
        published = await _publish_concurrently(
            count, concurrency, lambda: fabric.publish(topic, payload)
        )
        watch = _Stopwatch()
        await fabric.subscribe(topic, handler, group="bench")
        await done.wait()
        return published, watch.rate(count)


async def _raw_stream(js: JetStreamContext, prefix: str, count: int) -> tuple[str, str, str]:
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    name, subj = stream_name(prefix, topic), subject(prefix, topic)
    await js.add_stream(
        StreamConfig(
            name=name,
            subjects=[subj],
            retention=RetentionPolicy.INTEREST,
            discard=DiscardPolicy.NEW,
            max_msgs=count * 2,
            duplicate_window=120,
            storage=StorageType.FILE,
        )
    )
    config = ConsumerConfig(
        durable_name="bench",
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30,
        max_deliver=-1,
        deliver_policy=DeliverPolicy.NEW,
    )
    await js.add_consumer(name, config)
    return name, subj, "bench"


async def _raw_nats(
    url: str, prefix: str, count: int, payload: bytes, concurrency: int, batch: int
) -> tuple[Rate, Rate]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream, subj, durable = await _raw_stream(js, prefix, count)
        published = await _publish_concurrently(
            count, concurrency, lambda: js.publish(subj, payload)
        )
        watch = _Stopwatch()
        psub = await js.pull_subscribe_bind(durable, stream)
        handled = 0
        while handled < count:
            try:
                msgs = await psub.fetch(batch, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                _ = msg.metadata.num_delivered, msg.headers  # what any consumer reads
                await msg.ack()
            handled += len(msgs)
        consumed = watch.rate(count)
        await psub.unsubscribe()
        return published, consumed
    finally:
        await nc.close()


async def _raw_publish_async(url: str, prefix: str, count: int, payload: bytes) -> Rate:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        _, subj, _ = await _raw_stream(js, prefix, count)
        watch = _Stopwatch()
        acks = [await js.publish_async(subj, payload) for _ in range(count)]
        await asyncio.gather(*acks)
        return watch.rate(count)
    finally:
        await nc.close()


async def _delete_streams(url: str, prefix: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix + "_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def run(
    *,
    memory_messages: int = 20_000,
    nats_messages: int = 5_000,
    payload_bytes: int = 128,
    concurrency: int = 256,
    fetch_batch: int = 64,
    rounds: int = 5,
    nats_url: str | None = NATS_URL,
    time_limit: float = 60.0,
) -> dict[str, Any]:
    """Measure and return the figures: messages per second (wall clock) for every path, the
    same per CPU-second under ``*_cpu`` keys, and the fabric / raw ratios of both.

    ``nats_url=None`` skips NATS; an unreachable server is reported under ``"nats_error"``.
    """
    payload = b"x" * payload_bytes
    result: dict[str, Any] = {
        "memory_messages": memory_messages,
        "nats_messages": nats_messages,
        "payload_bytes": payload_bytes,
        "concurrency": concurrency,
        "rounds": rounds,
    }
    async with asyncio.timeout(time_limit):
        memory = Rate.best(
            [await _memory_end_to_end(memory_messages, payload) for _ in range(rounds)]
        )
    _record(result, "memory_end_to_end", memory)
    if nats_url is None:
        return result
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    fabric: list[tuple[Rate, Rate]] = []
    raw: list[tuple[Rate, Rate]] = []
    try:
        async with asyncio.timeout(time_limit):
            for i in range(rounds):
                sides = [(fabric, _nats_fabric), (raw, _raw_nats)]
                for figures, measure in sides if i % 2 == 0 else sides[::-1]:
                    figures.append(
                        await measure(
                            nats_url, prefix, nats_messages, payload, concurrency, fetch_batch
                        )
                    )
        async with asyncio.timeout(time_limit):
            pipelined = Rate.best(
                [
                    await _raw_publish_async(nats_url, prefix, nats_messages, payload)
                    for _ in range(rounds)
                ]
            )
    except (OSError, nats.errors.Error) as exc:
        result["nats_error"] = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        try:
            await _delete_streams(nats_url, prefix)
        except (OSError, nats.errors.Error):
            pass
    paths = {
        "nats_fabric_publish": Rate.best([p for p, _ in fabric]),
        "nats_fabric_consume": Rate.best([c for _, c in fabric]),
        "nats_raw_publish": Rate.best([p for p, _ in raw]),
        "nats_raw_consume": Rate.best([c for _, c in raw]),
        "nats_raw_publish_async": pipelined,
    }
    for key, rate in paths.items():
        _record(result, key, rate)
    for side in ("publish", "consume"):
        ours, theirs = paths[f"nats_fabric_{side}"], paths[f"nats_raw_{side}"]
        result[f"{side}_ratio"] = ours.wall / theirs.wall
        result[f"{side}_ratio_cpu"] = ours.cpu / theirs.cpu
    return result


def _record(result: dict[str, Any], key: str, rate: Rate) -> None:
    result[key] = rate.wall
    result[f"{key}_cpu"] = rate.cpu


def table(figures: dict[str, Any]) -> str:
    """The figures as a markdown table: wall-clock msg/s, and msg per CPU-second in brackets."""

    def rate(key: str) -> str:
        wall, cpu = figures.get(key), figures.get(f"{key}_cpu")
        if not isinstance(wall, float) or not isinstance(cpu, float):
            return "-"
        return f"{wall:,.0f} ({cpu:,.0f})"

    def ratio(key: str) -> str:
        return f"{figures[key]:.2f} ({figures[f'{key}_cpu']:.2f})"

    lines = [
        "| path | publish | consume | end to end |",
        "|---|---:|---:|---:|",
        f"| memory fabric ({figures['memory_messages']:,} msgs) | - | - | "
        f"{rate('memory_end_to_end')} |",
    ]
    if "nats_error" in figures:
        lines.append(f"| NATS | unavailable: {figures['nats_error']} | | |")
        return "\n".join(lines)
    lines += [
        f"| NATS fabric ({figures['nats_messages']:,} msgs) | {rate('nats_fabric_publish')} | "
        f"{rate('nats_fabric_consume')} | - |",
        f"| raw nats-py js.publish / fetch+ack | {rate('nats_raw_publish')} | "
        f"{rate('nats_raw_consume')} | - |",
        f"| raw nats-py publish_async (pipelined) | {rate('nats_raw_publish_async')} | - | - |",
        f"| fabric ÷ raw | {ratio('publish_ratio')} | {ratio('consume_ratio')} | - |",
    ]
    return "\n".join(lines)


async def main() -> None:
    figures = await run()
    print(table(figures))
    print(
        f"\nmsg/s by wall clock (in brackets: msg per CPU-second of this process). "
        f"{figures['payload_bytes']}-byte payloads, {figures['concurrency']} concurrent "
        f"publishers, best of {figures['rounds']} rounds."
    )


if __name__ == "__main__":
    asyncio.run(main())
