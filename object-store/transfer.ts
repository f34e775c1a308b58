// Moving an object's bytes between processes over the bus: chunks under the server's max_payload, several in flight,
// each checked (length and CRC-32) and asked for again when it arrives damaged.
import { crc32 } from 'node:zlib';
import { ObjectLostError, NoRespondersError, ProtocolError } from '../runtime/base/errors.ts';
import type { Bus } from '../runtime/bus/bus.ts';
import { MAX_CHUNK_BYTES, checkObjectMessage } from '../runtime/protocol/objects.ts';

export interface ChunkRequest {
  id: string;
  offset: number;
  length: number;
}
export interface Chunk {
  data: Uint8Array;
  crc: number;
  /** The object's size as its holder recorded it (what the owner or the holder's store sealed). */
  size?: number;
}

const CHUNKS_IN_FLIGHT = 8;
const ATTEMPTS = 3;

/** Room for the envelope under the server's max_payload; never more than 8 MiB per message. */
export function chunkSize(bus: Bus): number {
  const room = Math.min(bus.maxPayload - 16 * 1024, MAX_CHUNK_BYTES);
  return Math.max(64 * 1024, room - (room % 4096));
}

/** What a holder answers to a ChunkRequest for an object of `size` bytes (its record): the range asked for, which
 * must lie within the object. */
export function makeChunk(data: Uint8Array, size: number): Chunk {
  return { data, crc: crc32(data), size };
}

/** The range a chunk request names, checked against the object's record (its size): never past the end, never more
 * than one chunk. */
export function checkRange(req: unknown, size: (id: string) => number): ChunkRequest & { size: number } {
  const r = checkObjectMessage('read', req);
  const total = size(r.id);
  if (r.offset + r.length > total)
    throw new ProtocolError(`object ${r.id} is ${total} bytes: no bytes ${r.offset}..${r.offset + r.length} in it`);
  return { ...r, size: total };
}

/** The object's size as the first holder that answers recorded it (a read of no bytes asks just that). */
export async function recordedSize(bus: Bus, sources: string[], id: string): Promise<number> {
  let lastError: unknown;
  for (const subject of sources) {
    try {
      const c = checkObjectMessage('chunk', await bus.request(subject, { id, offset: 0, length: 0 }));
      if (c.size !== undefined) return c.size;
      lastError = new ProtocolError(`${subject} did not say the size of object ${id}`);
    } catch (e) {
      if (!(e instanceof NoRespondersError || e instanceof ObjectLostError)) throw e;
      lastError = e;
    }
  }
  throw new ObjectLostError(`object ${id}: no holder answers (${sources.length} tried)`, { cause: lastError });
}

/**
 * Reads `size` bytes of object `id` from the first source that has it, handing each verified chunk to `write`.
 * Sources are subjects of holders; one that has no responders (its process died) is skipped.
 */
export async function fetchChunked(
  bus: Bus,
  sources: string[],
  id: string,
  size: number,
  write: (chunk: Uint8Array, offset: number) => void | Promise<void>,
): Promise<void> {
  const chunk = chunkSize(bus);
  let lastError: unknown;
  for (const subject of sources) {
    let next = 0;
    // A chunk is asked for as soon as the last one came, not once it is written: writes overlap the transfer.
    const writes: Array<Promise<void>> = [];
    const worker = async () => {
      while (next < size) {
        const offset = next;
        const length = Math.min(chunk, size - offset);
        next += length;
        const data = await fetchOne(bus, subject, { id, offset, length });
        const written = Promise.resolve().then(() => write(data, offset));
        written.catch(() => undefined); // failures are seen below, once every chunk is in
        writes.push(written);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(CHUNKS_IN_FLIGHT, Math.ceil(size / chunk)) }, worker));
      await Promise.all(writes);
      return;
    } catch (e) {
      if (!(e instanceof NoRespondersError)) throw e;
      lastError = e;
    }
  }
  throw new ObjectLostError(`object ${id}: no holder answers (${sources.length} tried)`, { cause: lastError });
}

async function fetchOne(bus: Bus, subject: string, req: ChunkRequest): Promise<Uint8Array> {
  for (let attempt = 1; ; attempt++) {
    const c = await bus.request<Chunk>(subject, req);
    if (c?.size !== undefined && c.size < req.offset + req.length)
      throw new ObjectLostError(`object ${req.id} is ${c.size} bytes at ${subject}, not ${req.offset + req.length}`);
    const whole = c?.data instanceof Uint8Array && c.data.length === req.length;
    if (whole && crc32(c.data) === c.crc) return c.data;
    if (attempt === ATTEMPTS) {
      const what = whole ? 'failed its checksum' : `came back with ${c?.data?.length ?? 0} of ${req.length} bytes`;
      throw new ObjectLostError(
        `object ${req.id}: the chunk at byte ${req.offset} ${what} ${ATTEMPTS} times from ${subject}`,
      );
    }
  }
}

/** Reads a whole object into memory. */
export async function fetchToMemory(bus: Bus, sources: string[], id: string, size: number): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  await fetchChunked(bus, sources, id, size, (c, offset) => {
    out.set(c, offset);
  });
  return out;
}
