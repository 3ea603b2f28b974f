/**
 * What `sf join` prints on every backend: "<m> <id>=<status>[:<result>]...", the clones in ID
 * order, each with its exit status (or CloneStatus) and the result it exited with, if any.
 */

export interface JoinedClone {
  cloneId: number;
  status: number;
  result?: string;
}

/** The answer in at most `max` characters: with the results if they fit, else without them (`withResults` false). */
export function joinAnswer(ended: JoinedClone[], max: number): { text: string; withResults: boolean } {
  const sorted = [...ended].sort((a, b) => a.cloneId - b.cloneId);
  const text = (results: boolean) =>
    `${sorted.length}${sorted.map(({ cloneId, status, result }) => ` ${cloneId}=${status}${results && result ? `:${result}` : ""}`).join("")}`;
  const full = text(true);
  return full.length <= max ? { text: full, withResults: true } : { text: text(false), withResults: false };
}
