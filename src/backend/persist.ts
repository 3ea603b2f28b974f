/**
 * Each backend's machine state in a descriptor (its persist.ts), reached by the backend's name:
 * the descriptor format stays backend-neutral and hands a backend the sections it owns.
 */
import { refuse } from "../sections.ts";
import { BACKENDS, type BackendName, type StatePersist } from "./backend.ts";
import { kvmPersist } from "./kvm/persist.ts";

const PERSISTS: Readonly<Record<BackendName, StatePersist | undefined>> = { kvm: kvmPersist, xen: undefined };

/** Descriptor section types that hold some backend's state. */
export const STATE_SECTION_TYPES: ReadonlySet<number> = new Set(Object.values(PERSISTS).flatMap((p) => [...(p?.sectionTypes ?? [])]));

/** The largest persisted state of any backend (the descriptor's size limit counts it). */
export const MAX_STATE_BYTES = Math.max(...Object.values(PERSISTS).map((p) => p?.maxBytes ?? 0));

export function statePersist(backend: string): StatePersist {
  const persist = BACKENDS.includes(backend as BackendName) ? PERSISTS[backend as BackendName] : undefined;
  if (!persist) refuse(`backend '${backend.slice(0, 16)}' is not one whose clones this snowflock restores from a descriptor`);
  return persist;
}
