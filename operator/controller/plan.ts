import type { EventType } from '../kube/events.ts';

/** Something a pass decided that people should hear about: an Event on the endpoint and a log line. */
export interface Note {
  type: EventType;
  reason: string;
  message: string;
}
