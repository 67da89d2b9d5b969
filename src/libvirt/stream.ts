import { HANDLE, native, StreamMessage, type CallOptions, type StreamHandle } from './addon.js';
import type { Connect } from './connection.js';
import { ErrorCode, ErrorDomain, ErrorLevel, LibvirtError } from './errors.js';

const FREED_STREAM = Symbol('freed stream');

/**
 * A libvirt stream (virStreamPtr), from Connect.newStream(): a bidirectional byte channel that
 * a call such as Domain.openConsole() attaches to. A non-blocking stream (StreamFlags.NONBLOCK)
 * is driven by libvirt's event loop on the binding's own thread: receive() delivers what
 * arrives, send() queues bytes for it, neither occupies a worker thread. End it with finish()
 * or abort(); an unfinished stream that is garbage collected or freed is aborted.
 */
export class Stream {
  [HANDLE]: StreamHandle | typeof FREED_STREAM;
  #started: Promise<void> | undefined;
  #onData: ((chunk: Buffer) => void) | undefined;
  #ended: Promise<void>;
  #settleEnd!: (err?: Error) => void;
  #endError: Error | undefined;
  #isEnded = false;
  #pendingSends: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];

  /** @internal streams come from Connect.newStream */
  constructor(
    readonly connect: Connect,
    handle: StreamHandle,
    /** The StreamFlags it was created with. */
    readonly flags: number,
  ) {
    this[HANDLE] = handle;
    this.#ended = new Promise<void>((resolve, reject) => {
      this.#settleEnd = (err) => (err ? reject(err) : resolve());
    });
    // Only receive() hands this promise out; without a receiver an error is not unhandled.
    this.#ended.catch(() => undefined);
  }

  #t(opts: CallOptions | undefined): number | undefined {
    return opts?.timeoutMs ?? this.connect.callTimeoutMs;
  }

  #handle(): StreamHandle {
    return liveStreamHandle(this);
  }

  /** True once the stream reached its end, failed, or was finished or aborted. */
  get ended(): boolean {
    return this.#isEnded;
  }

  #start(opts?: CallOptions): Promise<void> {
    this.#started ??= native.stream.start(
      this.#handle(),
      (kind, arg) => this.#message(kind, arg),
      this.#t(opts),
    );
    return this.#started;
  }

  #message(kind: StreamMessage, arg: Buffer | Error | number | undefined): void {
    switch (kind) {
      case StreamMessage.Data:
        this.#onData?.(arg as Buffer);
        break;
      case StreamMessage.Sent:
        for (const s of this.#pendingSends.splice(0, arg as number)) s.resolve();
        break;
      case StreamMessage.End:
        this.#end(undefined);
        break;
      case StreamMessage.Error:
        this.#end(arg as Error);
        break;
    }
  }

  #end(err: Error | undefined): void {
    if (this.#isEnded) return;
    this.#isEnded = true;
    this.#endError = err;
    const unsent = this.#pendingSends.splice(0);
    const why = err ?? streamError('the stream ended before the data was sent');
    for (const s of unsent) s.reject(why);
    this.#settleEnd(err);
  }

  /**
   * Delivers the stream's data to `onData` as it arrives (virStreamEventAddCallback plus
   * virStreamRecv on libvirt's event-loop thread). Resolves when the stream reaches its end
   * (for a console: the domain stopped or another session took it over with FORCE); rejects
   * with the LibvirtError that ended it. Once per stream.
   */
  async receive(onData: (chunk: Buffer) => void, opts?: CallOptions): Promise<void> {
    if (typeof onData !== 'function') throw new TypeError('onData must be a function');
    if (this.#onData) throw new TypeError('receive() was already called on this stream');
    this.#onData = onData;
    await this.#start(opts);
    native.stream.setReading(this.#handle(), true);
    return this.#ended;
  }

  /**
   * Stops reading until resume(): libvirt then buffers, and the daemon stops reading the
   * console, so a slow consumer does not make memory grow. The binding also pauses by itself
   * while more than 1 MiB received has not been delivered to JS yet.
   */
  pause(): void {
    if (this.#onData) native.stream.setReading(this.#handle(), false);
  }

  resume(): void {
    if (this.#onData) native.stream.setReading(this.#handle(), true);
  }

  /**
   * Queues bytes for the stream (virStreamSend on libvirt's event-loop thread). Resolves when
   * libvirt took all of them; a caller that awaits each send never buffers more than one
   * chunk. Rejects with the stream's error, or when the stream ended first.
   */
  async send(data: Uint8Array | string, opts?: CallOptions): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    if (!(bytes instanceof Uint8Array))
      throw new TypeError('data must be a Uint8Array or a string');
    await this.#start(opts);
    if (this.#isEnded) throw this.#endError ?? streamError('the stream has ended');
    if (bytes.byteLength === 0) return;
    const sent = new Promise<void>((resolve, reject) => {
      this.#pendingSends.push({ resolve, reject });
    });
    if (!native.stream.send(this.#handle(), bytes)) {
      this.#pendingSends.pop();
      throw this.#endError ?? streamError('the stream has ended');
    }
    return sent;
  }

  /** virStreamFinish: ends a transfer that went well (stops the event callback first). */
  async finish(opts?: CallOptions): Promise<void> {
    try {
      await native.stream.finish(this.#handle(), this.#t(opts));
    } finally {
      this.#end(undefined);
    }
  }

  /** virStreamAbort: ends the stream at once, e.g. to detach from a console. */
  async abort(opts?: CallOptions): Promise<void> {
    try {
      await native.stream.abort(this.#handle(), this.#t(opts));
    } finally {
      this.#end(undefined);
    }
  }

  /** Drops the reference now; a stream that was neither finished nor aborted is aborted. */
  free(): void {
    const h = this[HANDLE];
    if (h === FREED_STREAM) return;
    native.stream.free(h);
    this[HANDLE] = FREED_STREAM;
  }
}

/** @internal The native handle; throws VIR_ERR_INVALID_STREAM for a freed stream. */
export function liveStreamHandle(stream: Stream): StreamHandle {
  const h = stream[HANDLE];
  if (h === FREED_STREAM) {
    throw new LibvirtError('the stream handle was freed', {
      code: ErrorCode.VIR_ERR_INVALID_STREAM,
      domain: ErrorDomain.VIR_FROM_STREAMS,
      level: ErrorLevel.VIR_ERR_ERROR,
    });
  }
  return h;
}

function streamError(message: string): LibvirtError {
  return new LibvirtError(message, {
    code: ErrorCode.VIR_ERR_OPERATION_INVALID,
    domain: ErrorDomain.VIR_FROM_STREAMS,
    level: ErrorLevel.VIR_ERR_ERROR,
  });
}
