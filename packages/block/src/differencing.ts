/**
 * Opening the parent of a differencing disk (VHD "Dynamic Disk Header Parent
 * Locator Entries", VHDX 2.6.2.6.3 "Parent Locator"): the image names its
 * parent by several candidate paths, and the first one that exists is the
 * parent. Through a registry the parent opens with `openBacking`, which
 * guards the whole chain; opened directly (no registry) this guards against a
 * chain that loops back or grows deeper than MAX_PARENT_CHAIN_DEPTH.
 */
import { access, realpath } from 'node:fs/promises';
import path from 'node:path';
import type { BlockDevice, BlockOpenOptions } from './driver.js';
import { BlockFormatError } from './errors.js';

export const MAX_PARENT_CHAIN_DEPTH = 256;

export interface ParentCandidates {
  /** the differencing image */
  child: string;
  /** the paths the image names, in the order its format tries them: absolute, or relative to the child's directory */
  candidates: readonly string[];
  /** the parent's format, for `openBacking` */
  format: string;
  openBacking: BlockOpenOptions['openBacking'];
  /** real paths of the images opened directly below this one (the child's children) */
  chain: readonly string[] | undefined;
  /** opens `resolved` read-only without a registry; `chain` goes on to the parent's own open */
  openDirect(resolved: string, chain: string[]): Promise<BlockDevice>;
}

/** Where a candidate path names a file: relative ones are relative to the child's directory. */
export function resolveParentCandidate(child: string, candidate: string): string {
  return path.isAbsolute(candidate) ? candidate : path.join(path.dirname(child), candidate);
}

/**
 * Opens the first candidate that exists, read-only. Undefined when none does
 * (the format names what it tried in its own error). The caller checks that
 * the parent is the one the child was made from.
 */
export async function openFirstParentCandidate(
  o: ParentCandidates,
): Promise<{ parent: BlockDevice; parentFilename: string; resolved: string } | undefined> {
  for (const cand of o.candidates) {
    const resolved = resolveParentCandidate(o.child, cand);
    if (!(await exists(resolved))) continue;
    if (o.openBacking !== undefined) return { parent: await o.openBacking(cand, o.format, true), parentFilename: cand, resolved };
    const chain = o.chain ?? [];
    const self = await realpathOrResolved(o.child);
    const real = await realpathOrResolved(resolved);
    if (real === self || chain.includes(real)) {
      throw new BlockFormatError(o.child, 'parent locator', `parent chain loops back to ${resolved}: ${[...chain, self, real].join(' -> ')}`);
    }
    if (chain.length >= MAX_PARENT_CHAIN_DEPTH) {
      throw new BlockFormatError(o.child, 'parent locator', `parent chain is deeper than ${MAX_PARENT_CHAIN_DEPTH} images`);
    }
    return { parent: await o.openDirect(resolved, [...chain, self]), parentFilename: cand, resolved };
  }
  return undefined;
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    // any failure to reach the file means this candidate is not the parent; the next one is tried
    return false;
  }
}

/** The real path, or the absolute one when the file cannot be resolved (a dangling link still compares by name). */
async function realpathOrResolved(p: string): Promise<string> {
  try {
    return await realpath(p);
  } catch {
    return path.resolve(p);
  }
}
