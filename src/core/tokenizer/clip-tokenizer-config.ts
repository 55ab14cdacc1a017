/**
 * The CLIP tokenizer's settings from its files: vocab.json, tokenizer_config.json and special_tokens_map.json are
 * validated and resolved into special tokens and added tokens with ids, every problem reported in one error.
 * tokenizer_config.json holds special tokens as plain strings or as AddedToken dicts (old SD-1.x saves mark them
 * `__type: "AddedToken"`); newer saves add an `added_tokens_decoder` id -> AddedToken map. merges.txt belongs to
 * the BPE and is read in clip-tokenizer.ts.
 *
 * Pure: takes the already-read file contents, touches no file system.
 */
import { PainterError } from '../../errors.js';

export interface AddedTokenSpec {
  readonly content: string;
  /** lstrip/rstrip: eat the whitespace left/right of the token when cutting it out of the text */
  readonly lstrip: boolean;
  readonly rstrip: boolean;
  readonly singleWord: boolean;
  readonly normalized: boolean;
  readonly special: boolean;
}

export interface ClipTokenizerFiles {
  vocab: Record<string, number>;
  merges: string;
  tokenizerConfig: unknown;
  specialTokensMap?: unknown;
}

/** Everything the tokenizer files decide except the BPE merges. */
export interface ClipTokenizerConfig {
  readonly bosToken: string;
  readonly eosToken: string;
  readonly padToken: string;
  readonly unkToken: string;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number;
  /** Infinity when tokenizer_config.json sets no model_max_length (transformers' VERY_LARGE_INTEGER) */
  readonly modelMaxLength: number;
  readonly paddingSide: 'left' | 'right';
  readonly truncationSide: 'left' | 'right';
  readonly cleanUpTokenizationSpaces: boolean;
  /** vocab.json and its inverse */
  readonly encoder: ReadonlyMap<string, number>;
  readonly decoder: ReadonlyMap<number, string>;
  /** transformers' all_special_tokens (bos, eos, unk, pad, additional; duplicates once) */
  readonly specialTokens: readonly string[];
  readonly additionalSpecialTokens: readonly string[];
  /** added tokens (special ones included) by id and by content; addTokens() grows them */
  readonly addedDecoder: Map<number, AddedTokenSpec>;
  readonly addedEncoder: Map<string, number>;
}

const EOT = '<|endoftext|>';
const CLIP_DEFAULTS = { bos_token: '<|startoftext|>', eos_token: EOT, unk_token: EOT, pad_token: EOT } as const;
// transformers' SPECIAL_TOKENS_ATTRIBUTES order decides which duplicate wins and the order new ids are handed out.
const SPECIAL_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;
type SpecialKey = (typeof SPECIAL_KEYS)[number];

// spec is undefined for a plain-string token
type TokenValue = { content: string; spec: Partial<AddedTokenSpec> | undefined } | null;
type Flags = { -readonly [K in keyof AddedTokenSpec]?: AddedTokenSpec[K] };
const FLAG_NAMES = [['lstrip', 'lstrip'], ['rstrip', 'rstrip'], ['single_word', 'singleWord'],
  ['normalized', 'normalized'], ['special', 'special']] as const;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

// undefined after reporting an error
function parseToken(v: unknown, where: string, errors: string[]): TokenValue | undefined {
  if (v === null) return null;
  if (typeof v === 'string') return { content: v, spec: undefined };
  if (!isObject(v) || typeof v.content !== 'string') {
    errors.push(`${where}: expected a string or an AddedToken object with a string "content"`);
    return undefined;
  }
  const spec: Flags = {};
  for (const [json, field] of FLAG_NAMES) {
    if (v[json] === undefined) continue;
    if (typeof v[json] !== 'boolean') errors.push(`${where}: "${json}" must be true or false`);
    spec[field] = v[json] === true;
  }
  return { content: v.content, spec };
}

/** An AddedToken's flags with transformers' defaults filled in (a special token is not normalized). */
export function makeSpec(content: string, flags: Partial<AddedTokenSpec> | undefined, special: boolean): AddedTokenSpec {
  const { lstrip = false, rstrip = false, singleWord = false, normalized = !special } = flags ?? {};
  return { content, lstrip, rstrip, singleWord, normalized, special };
}

function readOption<T>(cfg: Record<string, unknown>, key: string, allowed: readonly T[], fallback: T, errors: string[]): T {
  const v = cfg[key];
  if (v === undefined || v === null) return fallback;
  if (allowed.includes(v as T)) return v as T;
  errors.push(`tokenizer_config.json: "${key}" must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`);
  return fallback;
}

/** Validate vocab.json, tokenizer_config.json (and special_tokens_map.json); throws one PainterError listing every problem. */
export function parseClipTokenizerConfig(files: ClipTokenizerFiles): ClipTokenizerConfig {
  const errors: string[] = [];
  const encoder = new Map<string, number>();
  if (!isObject(files.vocab)) errors.push('vocab.json: expected a JSON object mapping token -> id');
  for (const [token, id] of Object.entries(isObject(files.vocab) ? files.vocab : {})) {
    if (Number.isInteger(id) && id >= 0) encoder.set(token, id);
    else errors.push(`vocab.json: the id of ${JSON.stringify(token)} is not a non-negative integer`);
  }
  if (isObject(files.vocab) && Object.keys(files.vocab).length === 0) errors.push('vocab.json: the vocabulary is empty');
  if (!isObject(files.tokenizerConfig)) errors.push('tokenizer_config.json: expected a JSON object');
  const cfg = isObject(files.tokenizerConfig) ? files.tokenizerConfig : {};
  const map = files.specialTokensMap;
  if (map !== undefined && !isObject(map)) errors.push('special_tokens_map.json: expected a JSON object');

  // transformers reads special_tokens_map.json (overriding the config) only when there is no added_tokens_decoder
  const hasDecoderMap = cfg.added_tokens_decoder !== undefined;
  const sources: Array<[Record<string, unknown>, string]> = [[cfg, 'tokenizer_config.json']];
  if (!hasDecoderMap && isObject(map)) sources.push([map, 'special_tokens_map.json']);
  const special = new Map<SpecialKey, TokenValue | undefined>();
  const additional: Array<NonNullable<TokenValue>> = [];
  for (const [source, file] of sources) {
    for (const key of SPECIAL_KEYS) if (key in source) special.set(key, parseToken(source[key], `${file}: "${key}"`, errors));
    const extra = source.additional_special_tokens ?? [];
    if (!Array.isArray(extra)) errors.push(`${file}: "additional_special_tokens" must be a list`);
    else {
      extra.forEach((t, i) => {
        const token = parseToken(t, `${file}: additional_special_tokens[${i}]`, errors);
        if (token && !additional.some((a) => a.content === token.content)) additional.push(token);
      });
    }
  }
  for (const [key, content] of Object.entries(CLIP_DEFAULTS) as Array<[SpecialKey, string]>) {
    if (!special.has(key)) special.set(key, { content, spec: undefined });
    else if (special.get(key) === null || special.get(key)?.content === '') {
      errors.push(`tokenizer_config.json: "${key}" is null or empty; CLIP needs it (SD 1.x uses "${content}")`);
    }
  }

  const addedDecoder = new Map<number, AddedTokenSpec>();
  const addedEncoder = new Map<string, number>();
  const decoderMap = hasDecoderMap ? cfg.added_tokens_decoder : {};
  if (!isObject(decoderMap)) errors.push('tokenizer_config.json: "added_tokens_decoder" must be an object');
  for (const [key, value] of Object.entries(isObject(decoderMap) ? decoderMap : {})) {
    const where = `tokenizer_config.json: added_tokens_decoder["${key}"]`;
    const id = Number(key);
    const token = isObject(value) ? parseToken(value, where, errors) : null;
    if (token === undefined) continue; // already reported
    if (!Number.isInteger(id) || id < 0 || !token) errors.push(`${where}: expected token id -> AddedToken object`);
    else {
      addedDecoder.set(id, makeSpec(token.content, token.spec, token.spec?.special ?? false));
      addedEncoder.set(token.content, id);
    }
  }

  // transformers saves VERY_LARGE_INTEGER (1e30) for "no limit"
  const maxLen = cfg.model_max_length ?? 1e30;
  if (!(typeof maxLen === 'number' && Number.isInteger(maxLen) && maxLen > 0)) {
    errors.push('tokenizer_config.json: "model_max_length" must be a positive integer (77 for CLIP)');
  }
  const cleanUp = readOption(cfg, 'clean_up_tokenization_spaces', [true, false], true, errors);
  const paddingSide = readOption(cfg, 'padding_side', ['right', 'left'] as const, 'right', errors);
  const truncationSide = readOption(cfg, 'truncation_side', ['right', 'left'] as const, 'right', errors);
  if (errors.length > 0) throw new PainterError(`Invalid CLIP tokenizer: ${errors.join('; ')}`);

  // Special tokens join the added tokens (transformers' _add_tokens(special_tokens=True)) in
  // SPECIAL_TOKENS_ATTRIBUTES order, a duplicate (eos == unk == pad) once: a known token keeps its id (an
  // added_tokens_decoder entry before vocab.json), an unknown one gets the next free id.
  const specialValues: Array<NonNullable<TokenValue>> = [];
  for (const value of [...SPECIAL_KEYS.map((k) => special.get(k)), ...additional]) {
    if (value?.content && !specialValues.some((s) => s.content === value.content)) specialValues.push(value);
  }
  const known = new Set([...encoder.keys(), ...addedEncoder.keys()]);
  for (const { content, spec } of specialValues) {
    const listed = addedEncoder.get(content);
    // a plain-string special token takes its flags from its added_tokens_decoder entry
    const flags = spec ?? (listed === undefined ? undefined : addedDecoder.get(listed));
    const id = listed ?? encoder.get(content) ?? known.size;
    known.add(content);
    addedDecoder.set(id, makeSpec(content, flags, true));
    addedEncoder.set(content, id);
  }

  const contentOf = (key: SpecialKey): string => special.get(key)!.content;
  const idOf = (key: SpecialKey): number => addedEncoder.get(contentOf(key))!;
  return {
    bosToken: contentOf('bos_token'),
    eosToken: contentOf('eos_token'),
    padToken: contentOf('pad_token'),
    unkToken: contentOf('unk_token'),
    bosTokenId: idOf('bos_token'),
    eosTokenId: idOf('eos_token'),
    padTokenId: idOf('pad_token'),
    unkTokenId: idOf('unk_token'),
    modelMaxLength: (maxLen as number) >= 1e15 ? Infinity : (maxLen as number),
    paddingSide,
    truncationSide,
    cleanUpTokenizationSpaces: cleanUp,
    encoder,
    decoder: new Map([...encoder].map(([t, id]) => [id, t])),
    specialTokens: specialValues.map((v) => v.content),
    additionalSpecialTokens: additional.map((v) => v.content),
    addedDecoder,
    addedEncoder,
  };
}
