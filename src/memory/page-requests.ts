/** A page source's requests: pages cut into requests, and several requests fetched in order. */
import { MAX_PAGES_PER_REQUEST } from "./page-protocol.ts";
import type { PageSource } from "./page-source.ts";

/** `pages` cut into requests of at most MAX_PAGES_PER_REQUEST, in order. */
export function inRequests(pages: readonly number[]): number[][] {
  const requests: number[][] = [];
  for (let i = 0; i < pages.length; i += MAX_PAGES_PER_REQUEST) requests.push(pages.slice(i, i + MAX_PAGES_PER_REQUEST));
  return requests;
}

/**
 * Each of `requests` from `source`, taken from it as they are sent, each answer to `each` in order
 * (views valid during that call): several in flight together where the source can, else one by one.
 */
export function fetchEach(
  source: Pick<PageSource, "fetch" | "fetchEach">,
  requests: Iterable<number[]>,
  each: (pages: number[], contents: Uint8Array[]) => void,
): void {
  if (source.fetchEach) return source.fetchEach(requests, each);
  for (const pages of requests) each(pages, source.fetch(pages));
}
