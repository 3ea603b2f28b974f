/** Every fuzz target, one per decoder, by name. */
import type { FuzzTarget } from "../engine.ts";
import { agentAnswerTarget, agentRequestTarget, cloneOrderTarget, familyEventTarget } from "./agent.ts";
import { codecTarget, descriptorTarget, envelopeTarget } from "./descriptor.ts";
import { launchRecordTarget } from "./launch-record.ts";
import { frameTarget, messagesTarget, reassemblyTarget } from "./mcdist.ts";
import { pageProtocolTarget, pageServerAddressTarget } from "./page-protocol.ts";
import { vmmControlTarget } from "./vmm-control.ts";

export const TARGETS: readonly FuzzTarget[] = [
  envelopeTarget,
  descriptorTarget,
  codecTarget,
  frameTarget,
  messagesTarget,
  reassemblyTarget,
  agentRequestTarget,
  agentAnswerTarget,
  cloneOrderTarget,
  familyEventTarget,
  pageProtocolTarget,
  pageServerAddressTarget,
  vmmControlTarget,
  launchRecordTarget,
];

export function targetNamed(name: string): FuzzTarget {
  const target = TARGETS.find((t) => t.name === name);
  if (!target) throw new Error(`no fuzz target '${name}'; the targets are ${TARGETS.map((t) => t.name).join(", ")}`);
  return target;
}
