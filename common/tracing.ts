/**
 * OpenTelemetry tracing of a message's way through the pipeline: gateway "send" -> relay "publish"
 * -> delivery "route" -> gateway "deliver", all in one trace. The context travels as a W3C
 * `traceparent` string (outbox row, Kafka header, node record field), never as an SDK object, so
 * roles can run with tracing on or off independently (docs/operations.md, "Tracing").
 *
 * One tracer provider per process, built from config and injected (tests pass an in-memory
 * exporter); nothing is registered globally. Off (the default), `start` returns null without
 * touching the SDK: callers guard with `tracing.enabled` or `span?.`, so a disabled process
 * allocates no span objects on the hot path.
 *
 * What a carried trace may be: a traceparent (continued as the parent), a bare W3C trace id (a
 * gateway with tracing off stores one; a span continues that trace id as a new root, so every
 * role's logs and spans still share one id), or anything else / null (a new trace).
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
  type Attributes,
  type AttributeValue,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  RandomIdGenerator,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type IdGenerator,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import type { TracingConfig } from './config.js';
import { isTraceId, parseTraceparent } from './trace-id.js';

export { SpanKind };

/** A span in progress. `traceparent` is what the next hop carries. */
export interface TraceSpan {
  readonly traceparent: string;
  set(key: string, value: AttributeValue): void;
  /** Ends the span; an error marks it failed. */
  end(err?: unknown): void;
}

export interface Tracing {
  readonly enabled: boolean;
  /**
   * A span of this process continuing `trace` (see the module comment); null when tracing is off.
   * Build `attributes` only when `enabled` (the literal alone is an allocation).
   */
  start(name: string, trace: string | null, kind: SpanKind, attributes?: Attributes): TraceSpan | null;
  /** Exports what is buffered (graceful stop). */
  shutdown(): Promise<void>;
}

export function noTracing(): Tracing {
  return { enabled: false, start: () => null, shutdown: async () => {} };
}

export interface TracingOptions {
  serviceName: string;
  /** service.instance.id: the node id. */
  instanceId: string;
  exporter: SpanExporter;
  /** Root spans sampled (0..1); a span with a parent follows the parent's decision. */
  sampleRatio: number;
  /** simple: export each span as it ends (tests); batch: buffered (production). */
  processor: 'simple' | 'batch';
  /** Batch processor: delay between exports (unset: OTEL_BSP_SCHEDULE_DELAY or the SDK default). */
  exportDelayMs?: number;
}

const FLAG_HEX = ['00', '01'] as const;

/**
 * Lets a new root span take the trace id a carrier already names (a bare trace id): the SDK gives a
 * root span a generated id and has no option for a chosen one. `next` is set right before the
 * synchronous startSpan call and consumed by it, so no other span can observe it.
 */
class CarriedTraceIdGenerator implements IdGenerator {
  next: string | null = null;
  private readonly random = new RandomIdGenerator();
  generateTraceId(): string {
    const id = this.next;
    this.next = null;
    return id ?? this.random.generateTraceId();
  }
  generateSpanId(): string {
    return this.random.generateSpanId();
  }
}

class ActiveSpan implements TraceSpan {
  constructor(private readonly span: Span) {}

  get traceparent(): string {
    const c = this.span.spanContext();
    return `00-${c.traceId}-${c.spanId}-${FLAG_HEX[c.traceFlags & TraceFlags.SAMPLED]}`;
  }

  set(key: string, value: AttributeValue): void {
    this.span.setAttribute(key, value);
  }

  end(err?: unknown): void {
    if (err !== undefined) {
      const e = err instanceof Error ? err : new Error(String(err));
      this.span.recordException(e);
      this.span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
    }
    this.span.end();
  }
}

export function createTracing(opts: TracingOptions): Tracing {
  const ids = new CarriedTraceIdGenerator();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: opts.serviceName,
      [ATTR_SERVICE_VERSION]: '0.1.0',
      'service.instance.id': opts.instanceId,
    }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(opts.sampleRatio) }),
    idGenerator: ids,
    spanProcessors: [
      opts.processor === 'simple'
        ? new SimpleSpanProcessor(opts.exporter)
        : new BatchSpanProcessor(opts.exporter, opts.exportDelayMs === undefined ? {} : { scheduledDelayMillis: opts.exportDelayMs }),
    ],
  });
  const tracer: Tracer = provider.getTracer('realchat');

  return {
    enabled: true,
    start(name, carried, kind, attributes) {
      const parent = parseTraceparent(carried);
      let span: Span;
      if (parent) {
        const ctx = trace.setSpanContext(ROOT_CONTEXT, {
          traceId: parent.traceId,
          spanId: parent.spanId,
          traceFlags: parent.flags & TraceFlags.SAMPLED,
          isRemote: true,
        });
        span = tracer.startSpan(name, { kind, attributes }, ctx);
      } else {
        ids.next = isTraceId(carried) ? carried : null;
        try {
          span = tracer.startSpan(name, { kind, attributes, root: true }, ROOT_CONTEXT);
        } finally {
          ids.next = null;
        }
      }
      return new ActiveSpan(span);
    },
    shutdown: () => provider.shutdown(),
  };
}

/**
 * The process's tracing from config (`role` names the service unless OTEL_SERVICE_NAME does). Off
 * unless an exporter is configured.
 */
export function tracingFromConfig(config: { nodeId: string; tracing: TracingConfig }, role: string): Tracing {
  const t = config.tracing;
  if (t.exporter === 'none') return noTracing();
  return createTracing({
    serviceName: t.serviceName ?? `realchat-${role}`,
    instanceId: config.nodeId,
    exporter: new OTLPTraceExporter({ url: t.endpoint, timeoutMillis: t.exportTimeoutMs }),
    sampleRatio: t.sampleRatio,
    processor: 'batch',
    ...(t.exportDelayMs === null ? {} : { exportDelayMs: t.exportDelayMs }),
  });
}
