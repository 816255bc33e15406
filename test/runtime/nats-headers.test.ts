import { strict as assert } from 'node:assert';
import { connect, headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection } from 'nats';
import { messageHeaders, parsePlainHeaderBlock, wellFormed } from '../../runtime/nats-headers';
import { ProtocolError } from '../../messages/errors';
import { HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TRACEPARENT, HEADER_TYPE } from '../../messages/headers';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';

const enc = new TextEncoder();

/** How nats.js itself reads a header block (what `msg.headers` gives). */
function decodedByNats(block: Uint8Array): MsgHdrs {
  const h = natsHeaders() as MsgHdrs & { constructor: { decode(b: Uint8Array): MsgHdrs } };
  return h.constructor.decode(block);
}

/** A raw header block as the server delivers it. */
function block(text: string): Uint8Array {
  return enc.encode(text);
}

describe('messageHeaders (reading a request\'s headers without the nats.js decoder)', function () {
  this.timeout(30_000);

  describe('parsePlainHeaderBlock', () => {
    const names = ['Strata-Type', 'Strata-Schema', 'Strata-Deadline', 'traceparent', 'x', 'X', 'dup', 'empty', 'colon', 'utf8', 'absent'];
    const blocks: Record<string, string> = {
      strata: `NATS/1.0\r\n${HEADER_TYPE}: shard.read\r\n${HEADER_SCHEMA}: 1\r\n${HEADER_DEADLINE}: 1764590000000\r\n\r\n`,
      traced: `NATS/1.0\r\n${HEADER_TYPE}: shard.write\r\n${HEADER_TRACEPARENT}: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n`,
      'names differ in case, values padded': 'NATS/1.0\r\nx:  lower \r\nX:\tupper\r\n\r\n',
      'a name twice (the first value counts)': 'NATS/1.0\r\ndup: one\r\ndup: two\r\n\r\n',
      'empty value and a colon in a value': 'NATS/1.0\r\nempty:\r\ncolon: a:b:c\r\n\r\n',
      'UTF-8 value': 'NATS/1.0\r\nutf8: größe ✓\r\n\r\n',
      'a line without a colon is skipped': 'NATS/1.0\r\nno colon here\r\nx: 1\r\n\r\n',
      'no final empty line': 'NATS/1.0\r\nx: 1\r\n',
      'no headers at all': 'NATS/1.0\r\n\r\n',
    };
    for (const [what, text] of Object.entries(blocks)) {
      it(`reads what nats.js reads: ${what}`, () => {
        const bytes = block(text);
        const plain = parsePlainHeaderBlock(bytes, bytes.length);
        assert.ok(plain !== undefined, 'a plain block is read here');
        const want = decodedByNats(bytes);
        for (const name of names) assert.equal(plain.get(name), want.get(name), `header ${name}`);
      });
    }

    it('reads only the header block, not the payload after it', () => {
      const bytes = block(`NATS/1.0\r\nx: 1\r\n\r\npayload: not a header`);
      const end = bytes.indexOf(0x70); // 'p'
      const plain = parsePlainHeaderBlock(bytes, end);
      assert.equal(plain?.get('x'), '1');
      assert.equal(plain?.get('payload'), '');
    });

    const notPlain: Record<string, string> = {
      'a status line': 'NATS/1.0 503\r\n\r\n',
      'a status line with a description': 'NATS/1.0 408 Request Timeout\r\nx: 1\r\n\r\n',
      'another prefix': 'HTTP/1.1\r\nx: 1\r\n\r\n',
      'a lone LF in a value': 'NATS/1.0\r\nx: a\nb\r\n\r\n',
      'a lone CR in a value': 'NATS/1.0\r\nx: a\rb\r\n\r\n',
      'an empty name': 'NATS/1.0\r\n: v\r\n\r\n',
      'too short': 'NATS/1.',
      'over 4 KiB': `NATS/1.0\r\nx: ${'v'.repeat(4096)}\r\n\r\n`,
    };
    for (const [what, text] of Object.entries(notPlain)) {
      it(`leaves ${what} to the nats.js decoder`, () => {
        const bytes = block(text);
        assert.equal(parsePlainHeaderBlock(bytes, bytes.length), undefined);
      });
    }

    // Names with a character outside '!'..'~' (found by the fuzzer: read here, such a block was
    // served where nats.js's decoder refuses it, and the request answered as if well formed).
    const badNames: Record<string, string> = {
      'a space': 'NATS/1.0\r\nStrata-Type: shard.flush\r\nbad name: 1\r\n\r\n',
      'a tab': 'NATS/1.0\r\nbad\tname: 1\r\n\r\n',
      'a control character': 'NATS/1.0\r\nbad\u0001name: 1\r\n\r\n',
      'a letter outside ASCII': 'NATS/1.0\r\ngröße: 1\r\n\r\n',
      'DEL': 'NATS/1.0\r\nbad\u007fname: 1\r\n\r\n',
    };
    for (const [what, text] of Object.entries(badNames)) {
      it(`leaves a name with ${what} to the nats.js decoder, which refuses it`, () => {
        const bytes = block(text);
        assert.equal(parsePlainHeaderBlock(bytes, bytes.length), undefined);
        assert.throws(() => decodedByNats(bytes), /is not a valid character for a header key/);
      });
    }
  });

  describe('on messages from a NATS server', () => {
    let server: NatsServerHandle;
    let nc: NatsConnection;

    before(async () => {
      server = await startNatsServer({ jetstream: false });
      nc = await connect({ servers: server.url });
    });
    after(async () => {
      await nc?.close();
      await server?.stop();
    });

    /** Publishes `data` with `headers` to a fresh subject and returns the message received. */
    async function roundTrip(headers: MsgHdrs | undefined, data = Uint8Array.of(1, 2, 3)): Promise<Msg> {
      const subject = `h.${Math.random().toString(36).slice(2)}`;
      const sub = nc.subscribe(subject, { max: 1 });
      const got = (async () => {
        for await (const m of sub) return m;
        throw new Error('subscription ended without a message');
      })();
      nc.publish(subject, data, headers === undefined ? {} : { headers });
      return got;
    }

    it("reads a Strata request's headers from the raw message, leaving nats.js's decoder unused", async () => {
      const h = natsHeaders();
      h.set(HEADER_TYPE, 'shard.read');
      h.set(HEADER_SCHEMA, '1');
      h.set(HEADER_DEADLINE, '1764590000000');
      h.set(HEADER_TRACEPARENT, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
      const msg = await roundTrip(h);
      const got = messageHeaders(msg);
      for (const name of [HEADER_TYPE, HEADER_SCHEMA, HEADER_DEADLINE, HEADER_TRACEPARENT, 'absent']) {
        assert.equal(got.get(name), h.get(name), name);
      }
      // The point of the module: nats.js has not decoded the block (it would have kept the map
      // here). Fails when a nats.js upgrade moves the raw message, so that the slow path is noticed.
      assert.equal((msg as unknown as { _headers?: unknown })._headers, undefined, 'nats.js decoded the headers');
      assert.deepEqual([...msg.data], [1, 2, 3], 'the payload is untouched');
    });

    it('a block the same as the last one read is not read again; one a byte apart reads as itself', async () => {
      const block = (deadline: string, type = 'shard.write'): MsgHdrs => {
        const h = natsHeaders();
        h.set(HEADER_TYPE, type);
        h.set(HEADER_DEADLINE, deadline);
        return h;
      };
      const first = messageHeaders(await roundTrip(block('1764590000000')));
      const same = messageHeaders(await roundTrip(block('1764590000000')));
      assert.equal(same, first, 'the same block: what it read as before');
      for (const [deadline, type] of [['1764590000001', 'shard.write'], ['1764590000001', 'shard.zero'], ['1764590000000', 'shard.write']] as const) {
        const got = messageHeaders(await roundTrip(block(deadline, type)));
        assert.equal(got.get(HEADER_DEADLINE), deadline);
        assert.equal(got.get(HEADER_TYPE), type);
      }
    });

    it('a message without headers has none', async () => {
      const msg = await roundTrip(undefined);
      assert.equal(messageHeaders(msg).get(HEADER_TYPE), '');
    });

    it('a block that is not plain is read by the nats.js decoder', async () => {
      const h = natsHeaders(503, 'No Responders');
      h.set('x', 'status');
      const msg = await roundTrip(h, new Uint8Array(0));
      assert.equal(messageHeaders(msg).get('x'), 'status');
      assert.equal(msg.headers?.code, 503);
    });

    it('a block nats.js\'s decoder refuses is malformed: every name absent, nothing thrown', () => {
      const msg = {
        get headers(): never {
          throw new Error('invalid header value - \\r and \\n are not allowed.');
        },
      } as unknown as Msg;
      const got = messageHeaders(msg);
      assert.match(got.malformed ?? '', /invalid header value/);
      assert.equal(got.get(HEADER_TYPE), '');
      // Where a request is read, such a block is refused as such.
      assert.throws(() => wellFormed(got), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /^malformed NATS headers: invalid header value/.test(e.message));
      const fine = messageHeaders({ headers: undefined } as unknown as Msg);
      assert.equal(wellFormed(fine), fine);
    });

    it('a message object without the raw fields is read through msg.headers', () => {
      const h = natsHeaders();
      h.set(HEADER_TYPE, 'shard.write');
      const msg = { headers: h, data: new Uint8Array(0) } as unknown as Msg;
      assert.equal(messageHeaders(msg).get(HEADER_TYPE), 'shard.write');
      assert.equal(messageHeaders({ headers: undefined } as unknown as Msg).get(HEADER_TYPE), '');
    });
  });
});
