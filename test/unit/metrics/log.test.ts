/** Structured logs: JSON lines with the old sentence as msg, and fields read from it. */
import { expect } from 'chai';
import { classifyLine, createLogger, logLevelFrom } from '../../../src/metrics/index.js';

describe('classifyLine()', () => {
  const cases: [string, string, Record<string, string | number>][] = [
    ['attached volume pg-data for writing (epoch 3); 12 extents written', 'info', { volume: 'pg-data' }],
    ['detached volume pg-data', 'info', { volume: 'pg-data' }],
    [
      'volume pg-data: extent 17 read degraded (slow shard); decoding from any 4 shards',
      'warn',
      { volume: 'pg-data', extent: 17 },
    ],
    [
      'volume v: background flush failed: Cannot store extent 3 of volume "v": 4 of 6 shards stored, 6 required (shard 2 on b-1: refused)',
      'warn',
      { volume: 'v', extent: 3, target: 'b-1' },
    ],
    [
      'nbd conn 7 (127.0.0.1:5555): export "pg-data": write offset 0 length 4096: EIO: Cannot read shard k from node "a-2"',
      'warn',
      { volume: 'pg-data', conn: 7, target: 'a-2' },
    ],
    ['BUG nbd conn 2 (unix): running READ: TypeError: x | at y', 'error', { conn: 2 }],
    [
      'PUT /v1/shards/f/2 -> 507 ENOSPC: Cannot store shard f/2 on node "b-1": disk full',
      'error',
      { method: 'PUT', path: '/v1/shards/f/2', status: 507, code: 'ENOSPC', target: 'b-1' },
    ],
    [
      'GET /v1/shards/x -> 401 EAUTH: node "b-1" refused the request: no shared secret',
      'warn',
      { method: 'GET', path: '/v1/shards/x', status: 401, code: 'EAUTH' },
    ],
    ['SIGTERM: stopping (waiting up to 10000 ms for requests in flight)', 'info', {}],
    ['lost the etcd lease of cairn/v1/alive/b-1 (x); registering again', 'warn', {}],
    ['volume v: volume fenced: y; writes will fail from now on', 'warn', { volume: 'v' }],
  ];
  for (const [line, level, fields] of cases) {
    it(`reads "${line.slice(0, 50)}..."`, () => {
      const got = classifyLine(line);
      expect(got.level).to.equal(level);
      expect(got.fields).to.deep.equal(fields);
    });
  }
});

describe('createLogger()', () => {
  it('writes one JSON object per line: level, ISO time, process fields, event fields, and the sentence as msg', () => {
    const lines: string[] = [];
    const log = createLogger({
      name: 'cairnd',
      fields: { node: 'b-1', zone: 'b' },
      level: 'info',
      write: (l) => lines.push(l),
    });
    log.line('volume pg-data: extent 17 read degraded (slow shard); decoding from any 4 shards');
    log.info('metrics on http://127.0.0.1:9464/metrics', { metrics: '127.0.0.1:9464' });
    log.debug('not shown at info');
    log.child({ volume: 'v' }).error('broken');
    expect(lines).to.have.length(3);
    for (const l of lines) expect(l).to.not.contain('\n');
    const [first, second, third] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(first).to.include({
      level: 'warn',
      name: 'cairnd',
      node: 'b-1',
      zone: 'b',
      volume: 'pg-data',
      extent: 17,
      msg: 'volume pg-data: extent 17 read degraded (slow shard); decoding from any 4 shards',
      pid: process.pid,
    });
    expect(String(first!['time'])).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(second).to.include({ level: 'info', metrics: '127.0.0.1:9464' });
    expect(third).to.include({ level: 'error', volume: 'v', msg: 'broken' });
  });

  it('keeps a multi-line message (a stack) on one line', () => {
    const lines: string[] = [];
    createLogger({ name: 't', level: 'info', write: (l) => lines.push(l) }).line('GET /x: Error: a\n    at b');
    expect(lines).to.have.length(1);
    expect((JSON.parse(lines[0]!) as { msg: string }).msg).to.equal('GET /x: Error: a\n    at b');
  });

  it('takes its level from CAIRN_LOG_LEVEL', () => {
    expect(logLevelFrom({ CAIRN_LOG_LEVEL: 'debug' })).to.equal('debug');
    expect(logLevelFrom({ CAIRN_LOG_LEVEL: ' WARN ' })).to.equal('warn');
    expect(logLevelFrom({ CAIRN_LOG_LEVEL: 'chatty' })).to.equal('info');
    expect(logLevelFrom({})).to.equal('info');
  });
});
