// The benchmark's peer: Durable Chat's HTTP contract (docs/api.md) served by one Node process on
// Vercel's `resumable-stream`, the library the original plan used. Only what the benchmark needs:
// POST /api/chat (SSE start/delta/finish), GET /api/chat?chatId= (resume after Last-Event-ID),
// GET /healthz. The demo model is the same as Durable Chat's (chat/agents/demo.py): the same
// deterministic words, paced against the same deadlines, so both servers stream identical text.
//
// An SSE id is the number of characters of the stream up to the end of that event, so a resume
// with Last-Event-ID is resumable-stream's own `skipCharacters`. Nothing is stored: this peer is
// not durable (a finished stream cannot be replayed, a crash loses the reply).
//
//   REDIS_URL=redis://127.0.0.1:6379 PORT=5100 DEMO_MODEL_WORDS=200 DEMO_MODEL_DELAY_MS=20 node server.mjs

import { createHash, randomUUID } from "node:crypto";
import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

import { createClient } from "redis";
import { createResumableStreamContext } from "resumable-stream";

const PORT = Number(process.env.PORT || 5100);
const WORDS = Number(process.env.DEMO_MODEL_WORDS || 60);
const DELAY_MS = Number(process.env.DEMO_MODEL_DELAY_MS || 40);
const AGENTS = { helper: "Helper", coder: "Coder" };
const VOCABULARY = (
  "durable streams keep every token safe while browsers come and go across workers and hosts " +
  "redis records each chunk so a reader resumes exactly where it left off without gaps or " +
  "duplicates the reply is stored once and billed once whatever happens to the connection"
).split(" ");

/** chat/agents/demo.py demo_words(), word for word. */
function demoWords(slug, message, words) {
  const digest = createHash("sha256").update(`${slug}\0${message}`).digest();
  const snippet = message.split(/\s+/).filter(Boolean).slice(0, 8).join(" ");
  const pieces = [`**${AGENTS[slug]}** (demo model) heard: _${snippet}_\n\n`];
  for (let index = 0; index < words; index++) {
    const word = VOCABULARY[(digest[index % digest.length] + index * 7) % VOCABULARY.length];
    pieces.push(word + (index === words - 1 ? "" : " "));
  }
  return pieces;
}

/** One SSE event whose id is the stream's length once the event is written (a fixed point). */
function sseEvent(offset, event, data) {
  const body = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
  for (let digits = 1; ; digits++) {
    const end = offset + "id: ".length + digits + 1 + body.length;
    if (String(end).length === digits) return `id: ${end}\n${body}`;
  }
}

function replyStream(chatId, streamId, slug, message) {
  const pieces = demoWords(slug, message, WORDS);
  return new ReadableStream({
    async start(controller) {
      let offset = 0;
      const send = (event, data) => {
        const text = sseEvent(offset, event, data);
        offset += text.length;
        controller.enqueue(text);
      };
      send("start", { chatId, streamId, messageId: randomUUID() });
      const started = performance.now();
      for (let index = 0; index < pieces.length; index++) {
        const wait = started + (index + 1) * DELAY_MS - performance.now();
        if (wait > 0) await sleep(wait);
        send("delta", { text: pieces[index] });
      }
      send("finish", { finishReason: "stop", usage: { promptTokens: 0, completionTokens: pieces.length } });
      controller.close();
    },
  });
}

const publisher = createClient({ url: process.env.REDIS_URL });
const subscriber = createClient({ url: process.env.REDIS_URL });
await Promise.all([publisher.connect(), subscriber.connect()]);
const streams = createResumableStreamContext({ waitUntil: null, publisher, subscriber });

async function pipe(stream, res) {
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  const reader = stream.getReader();
  res.on("close", () => reader.cancel().catch(() => {}));
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    res.write(value);
  }
  res.end();
}

function json(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  let body = "";
  for await (const chunk of req) body += chunk;
  return body;
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, "http://peer");
    if (req.method === "GET" && url.pathname === "/healthz") return json(res, 200, { status: "ok" });
    if (req.method === "POST" && url.pathname === "/api/chat") {
      const { chatId, agent, message } = JSON.parse(await readBody(req));
      if (!AGENTS[agent]) return json(res, 404, { error: `Unknown agent '${agent}'.` });
      const streamId = randomUUID();
      await publisher.set(`peer:chat:${chatId}:stream`, streamId, { EX: 3600 });
      const stream = await streams.createNewResumableStream(streamId, () =>
        replyStream(chatId, streamId, agent, message),
      );
      return pipe(stream, res);
    }
    if (req.method === "GET" && url.pathname === "/api/chat") {
      const streamId = await publisher.get(`peer:chat:${url.searchParams.get("chatId")}:stream`);
      if (!streamId) return json(res, 404, { error: "No chat with that id." });
      const cursor = req.headers["last-event-id"] || url.searchParams.get("lastEventId");
      const stream = await streams.resumeExistingStream(streamId, cursor ? Number(cursor) : undefined);
      if (!stream) return json(res, 204, {});
      return pipe(stream, res);
    }
    json(res, 404, { error: "Not found." });
  } catch (error) {
    console.error(error);
    if (!res.headersSent) json(res, 500, { error: "Something went wrong on the server." });
    else res.end();
  }
});
server.listen(PORT, "127.0.0.1", () => console.log(`peer listening on 127.0.0.1:${PORT}`));
