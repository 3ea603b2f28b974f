/**
 * Each backend's machine state in a descriptor (its persist.ts), reached by the backend's name:
 * the descriptor format stays backend-neutral and hands a backend the sections it owns.
 */
import type { BackendName, StatePersist } from "./backend.ts";
import { kvmPersist } from "./kvm/persist.ts";
import { xenPersist } from "./xen/persist.ts";

const PERSISTS: Readonly<Record<BackendName, StatePersist>> = { kvm: kvmPersist, xen: xenPersist };

/** Descriptor section types that hold some backend's state. */
export const STATE_SECTION_TYPES: ReadonlySet<number> = new Set(Object.values(PERSISTS).flatMap((p) => [...p.sectionTypes]));

/** The largest persisted state of any backend (the descriptor's size limit counts it). */
export const MAX_STATE_BYTES = Math.max(...Object.values(PERSISTS).map((p) => p.maxBytes));

export function statePersist(backend: BackendName): StatePersist {
  return PERSISTS[backend];
}
