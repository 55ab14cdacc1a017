/** An attribute classifier folder (config.json with its class lists, model.safetensors), e.g. fixtures/mini-classifier. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { attributeClassifierShapes } from '../core/models/attribute-classifier.js';
import type { ImageClassifier } from '../core/pipeline/classifier-guidance.js';
import { PainterError } from '../errors.js';
import { loadWeights, readJson } from './load-weights.js';

const positiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

export function loadImageClassifier(dir: string): ImageClassifier {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new PainterError(`--classifier ${dir}: no config.json there; give an attribute classifier folder such as fixtures/mini-classifier`);
  const o = readJson(file) as Record<string, unknown>;
  const { image_size: imageSize, widths, norm_groups: normGroups = 8, norm_eps: normEps = 1e-5, labels } = o;
  const listOk = (v: unknown) => Array.isArray(v) && v.length > 1 && v.every((c) => typeof c === 'string');
  if (
    !positiveInt(imageSize) ||
    !Array.isArray(widths) ||
    !widths.every(positiveInt) ||
    !positiveInt(normGroups) ||
    typeof normEps !== 'number' ||
    typeof labels !== 'object' ||
    labels === null ||
    !Object.values(labels).every(listOk)
  ) {
    throw new PainterError(`${file}: not an attribute classifier config (image_size, widths, norm_groups, norm_eps and labels: lists of class names per attribute)`);
  }
  const config = { imageSize, widths: widths as number[], normGroups, normEps };
  const lists = labels as Record<string, string[]>;
  const heads = Object.fromEntries(Object.entries(lists).map(([k, v]) => [k, v.length]));
  const params = loadWeights([path.join(dir, 'model.safetensors')], attributeClassifierShapes(config, heads), 'classifier');
  return { params, config, labels: lists };
}
