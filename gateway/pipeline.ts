/** What a gateway node needs from the event pipeline it runs on (distributed or standalone). */
import type { GatewayInbox } from './inbox.js';
import type { PresenceFeed } from './presence-feed.js';
import type { LapseHandler } from './presence-agent.js';

/** Presence entries and typing for other nodes (distributed mode). */
export interface ClusterPorts {
  connected(userId: string): Promise<void>;
  disconnected(userId: string): void;
  /** Typing for members on other nodes (this node delivers its own locally); members null: a large room. */
  publishEphemeral(conversationId: string, exceptUser: string, members: Iterable<string> | null, frame: Record<string, unknown>): void;
  /** Large rooms: this node gained its first (true) or lost its last (false) subscriber of a room. */
  roomInterest(conversationId: string, interested: boolean): Promise<void>;
  /** Readiness: this node's delivery consumer runs (a node that cannot receive deliveries should get no clients). */
  consumerStatus?(): { running: boolean; detail: string };
  /** Presence for clients across nodes (Redis); absent: this node's own connections are the truth. */
  presenceFeed?: PresenceFeed;
}

/** Where committed events go and how deliveries come back to this node's inbox. */
export interface NodePipeline {
  /** After a local commit that produced an event (wakes an in-process relay). */
  onEventCommitted(): void;
  /** Resolves when every event committed so far has been handed to connections (in-process only). */
  settled(): Promise<void>;
  stop(): Promise<void>;
  cluster: ClusterPorts | null;
}

/** What a node offers its pipeline: where deliveries go, and who is connected here. */
export interface NodePorts {
  inbox: GatewayInbox;
  /** This node's users and their connection counts. */
  users(): ReadonlyMap<string, number>;
  /** Large rooms with a subscriber on this node. */
  rooms(): Iterable<string>;
  /** What to do when this node may have dropped out of the presence registry (distributed mode). */
  lapses: LapseHandler;
}

export type PipelineFactory = (node: NodePorts) => Promise<NodePipeline>;
