/**
 * Structured logs: one JSON object per line (pino) on standard error, for cairnd and the
 * frontend. Each object has `level` (debug, info, warn, error), `time` (ISO 8601), `name` (the
 * process: cairnd or cairnctl-nbd), `pid`, `hostname`, the process's own fields (cairnd: `node`,
 * `zone`), the fields of the event (`volume`, `extent`, `target`, `conn`, `method`, `status`,
 * `code` where known), and `msg`: the same one-line sentence Cairn printed before, so a person
 * grepping for "detached volume pg-data" still finds it.
 *
 * Most layers take a plain `log: (line: string) => void` and should not know about pino;
 * Logger.line serves them: classifyLine() reads the level and the fields from the sentence,
 * which Cairn words consistently (`volume NAME: ...`, `extent N`, `shard I on TARGET`,
 * `METHOD PATH -> STATUS CODE: ...`, `BUG ...`).
 *
 * What it keeps true: logging never throws into the caller, and lines are written synchronously,
 * so the last words before an exit or a crash are not lost. Plain output meant for scripts (the
 * ready lines on standard output, a command's result) does not come through here.
 *
 * What it leaves out: log shipping, rotation and pretty printing (pipe to `pino-pretty` or `jq`).
 */
import { hostname } from 'node:os';
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export const logLevels: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];
export type LogFields = Readonly<Record<string, string | number | boolean>>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** For layers that take `(line: string) => void`: level and fields come from classifyLine(). */
  readonly line: (line: string) => void;
  /** A logger adding `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** The process: `cairnd`, `cairnctl-nbd`. */
  readonly name: string;
  /** Fields on every line (cairnd: node and zone). */
  readonly fields?: LogFields;
  /** Lines below this level are dropped. Default: $CAIRN_LOG_LEVEL, else info. */
  readonly level?: LogLevel;
  /**
   * Where each JSON line goes, without its newline; called synchronously. Default: written to
   * standard error (fd 2) synchronously.
   */
  readonly write?: (line: string) => void;
}

/** $CAIRN_LOG_LEVEL when it names a level, else info. */
export function logLevelFrom(env: NodeJS.ProcessEnv): LogLevel {
  const text = (env['CAIRN_LOG_LEVEL'] ?? '').trim().toLowerCase();
  return (logLevels as readonly string[]).includes(text) ? (text as LogLevel) : 'info';
}

export function createLogger(options: LoggerOptions): Logger {
  const write = options.write;
  const destination: DestinationStream =
    write === undefined
      ? pino.destination({ fd: 2, sync: true })
      : { write: (text: string) => write(text.endsWith('\n') ? text.slice(0, -1) : text) };
  const root = pino(
    {
      name: options.name,
      level: options.level ?? logLevelFrom(process.env),
      base: { pid: process.pid, hostname: hostname(), ...options.fields },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
  return wrap(root);
}

function wrap(p: PinoLogger): Logger {
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    try {
      if (fields === undefined) p[level](msg);
      else p[level](fields, msg);
    } catch {
      // A log line that cannot be written must not take the request or the process with it.
    }
  };
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    line: (line) => {
      const { level, fields } = classifyLine(line);
      emit(level, line, fields);
    },
    child: (fields) => wrap(p.child(fields)),
  };
}

/** A name as Cairn allows it (src/core/ids.ts): lowercase letters, digits, '-'. */
const name = '([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)';
const leadingVolume = new RegExp(`^(?:(?:attached|detached) )?volume ${name}(?=[: ]|$)`);
const quotedVolume = /\b(?:volume|export) "([^"]{1,256})"/;
const extentNumber = /\bextent (\d{1,15})\b/;
const shardOnTarget = new RegExp(`\\bshard \\d+ on ${name}\\b`);
const quotedTarget = /\b(?:target|(?:from|on|to) node) "([^"]{1,256})"/;
const connection = /^(?:BUG )?nbd conn (\d+)\b/;
const httpLine = /^([A-Z]{1,16}) (\S{1,256}) -> (\d{3}) ([A-Z][A-Z0-9_]{0,40})\b/;
/** An NBD request answered with an errno: `...: EIO: ...`. */
const errnoReply = /: E[A-Z]{2,15}: /;
const trouble =
  /\b(?:lost|fenced|failed|fails|cannot|unreadable|corrupt|degraded|refused|refusing|error|errors|timed out|did not|not finished|cut off|dropping|without waiting)\b/i;

/**
 * The level and fields of a Cairn log sentence. Pure.
 * @example
 * classifyLine('volume pg-data: extent 17 read degraded (slow shard); decoding from any 4 shards')
 * // { level: 'warn', fields: { volume: 'pg-data', extent: 17 } }
 * classifyLine('PUT /v1/shards/x -> 507 ENOSPC: disk full')
 * // { level: 'warn', fields: { method: 'PUT', path: '/v1/shards/x', status: 507, code: 'ENOSPC' } }
 */
export function classifyLine(line: string): { level: LogLevel; fields: Record<string, string | number> } {
  const fields: Record<string, string | number> = {};
  const volume = leadingVolume.exec(line)?.[1] ?? quotedVolume.exec(line)?.[1];
  if (volume !== undefined) fields['volume'] = volume;
  const extent = extentNumber.exec(line)?.[1];
  if (extent !== undefined) fields['extent'] = Number(extent);
  const target = shardOnTarget.exec(line)?.[1] ?? quotedTarget.exec(line)?.[1];
  if (target !== undefined) fields['target'] = target;
  const conn = connection.exec(line)?.[1];
  if (conn !== undefined) fields['conn'] = Number(conn);
  const http = httpLine.exec(line);
  let level: LogLevel = 'info';
  if (http !== null) {
    const status = Number(http[3]);
    fields['method'] = http[1] as string;
    fields['path'] = http[2] as string;
    fields['status'] = status;
    fields['code'] = http[4] as string;
    level = status >= 500 ? 'error' : 'warn';
  }
  if (/^BUG\b|\bBUG nbd\b/.test(line)) level = 'error';
  else if (level === 'info' && (trouble.test(line) || errnoReply.test(line))) level = 'warn';
  return { level, fields };
}
