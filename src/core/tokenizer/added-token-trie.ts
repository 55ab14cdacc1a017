/**
 * The added-token trie: cuts added tokens (special tokens, Textual Inversion placeholders) out of raw text before
 * any normalization or BPE. A port of transformers' Trie.split, quirks included (leftmost match wins, and among
 * partial matches that started at or before it the longest one is taken).
 */

export interface TrieNode {
  readonly children: Map<string, TrieNode>;
  terminal: boolean;
}

/** A trie of the added tokens' contents; an empty content is skipped. */
export function buildTrie(words: Iterable<string>): TrieNode {
  const root: TrieNode = { children: new Map(), terminal: false };
  for (const word of words) {
    if (!word) continue;
    let node = root;
    for (const ch of word) {
      let child = node.children.get(ch);
      if (!child) {
        child = { children: new Map(), terminal: false };
        node.children.set(ch, child);
      }
      node = child;
    }
    node.terminal = true;
  }
  return root;
}

/** `text` cut into pieces, each matched added token a piece of its own; joined they give `text` back. */
export function trieSplit(root: TrieNode, text: string): string[] {
  const chars = Array.from(text); // Python indexes code points
  const n = chars.length;
  // partial matches: start index -> trie position, kept in ascending start order
  let states = new Map<number, TrieNode>();
  const offsets = [0];
  let skip = 0;
  for (let current = 0; current < n; current++) {
    if (skip && current < skip) continue;
    const ch = chars[current]!;
    const toRemove: number[] = [];
    let reset = false;
    for (const [start, node] of states) {
      if (node.terminal) {
        // a match ended here: look ahead from every partial match that started no later for the longest one
        let matchStart = start;
        let end = current;
        for (const [lookStart, lookNodeAtStart] of states) {
          if (lookStart > matchStart) break;
          let lookNode: TrieNode | undefined = lookNodeAtStart;
          // earlier partial matches were already advanced past `current` in this pass
          let lookahead = lookStart < matchStart ? current + 1 : current;
          end = lookahead;
          for (; lookNode; lookNode = lookNode.children.get(chars[lookahead++] ?? '')) {
            if (lookNode.terminal) [matchStart, end, skip] = [lookStart, lookahead, lookahead];
          }
        }
        offsets.push(matchStart, end);
        reset = true;
        break;
      }
      const child = node.children.get(ch);
      if (child) states.set(start, child);
      else toRemove.push(start);
    }
    if (reset) states = new Map();
    else for (const start of toRemove) states.delete(start);
    const first = root.children.get(ch);
    if (current >= skip && first) states.set(current, first);
  }
  const last = [...states].find(([, node]) => node.terminal);
  if (last) offsets.push(last[0], n);
  offsets.push(n);
  const pieces: string[] = [];
  let start = 0;
  for (const end of offsets) {
    if (start >= end) continue;
    pieces.push(chars.slice(start, end).join(''));
    start = end;
  }
  return pieces;
}
