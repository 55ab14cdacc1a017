/**
 * The concepts a training command learns in one run: --dataset FILE.yaml, or a folder of kohya
 * concept folders (`10_sks dog`) found in place of images; their images read and tagged with
 * their concept and repeats, and the summary the run log and config.json give of them.
 */
import * as path from 'node:path';
import { UsageError } from '../errors.js';
import { folderDataset, loadDatasetFile, type ConceptDataset, type DatasetCommand } from '../io/concept-dataset.js';
import type { SourceImage } from '../io/dataset.js';
import type { Hooks } from './hooks.js';

/**
 * The dataset a command trains on: the --dataset file, or `dir` (the current folder when none is
 * named) when it holds no image of its own but kohya concept folders. Undefined for an image folder.
 */
export function trainingDataset(command: DatasetCommand, dir: string | undefined, datasetFile: string | undefined, hooks: Hooks): ConceptDataset | undefined {
  const named = dir !== undefined && dir !== '';
  if (datasetFile !== undefined) {
    if (named) throw new UsageError(`--dataset ${datasetFile} names the training images; drop the folder ${dir}, or drop --dataset`);
    const dataset = loadDatasetFile(datasetFile, command);
    hooks.info?.(`dataset file ${dataset.source}: ${dataset.concepts.length} concept(s)`);
    return dataset;
  }
  const dataset = folderDataset(named ? dir : '.', command, (m) => hooks.warn?.(m));
  if (dataset) hooks.info?.(`${dataset.source} holds no image of its own but kohya concept folders (N_${command === 'invert' ? 'token' : 'prompt'}): read as a dataset of ${dataset.concepts.length} concept(s)`);
  return dataset;
}

/** How a concept's images were read: the reader of one folder, with its caption extensions. */
export type FolderReader = (folder: string, captionExtensions?: readonly string[]) => Promise<SourceImage[]>;

/** Every concept's images, each tagged with its concept (index) and repeats, concept after concept. */
export async function readConceptImages(dataset: ConceptDataset, read: FolderReader): Promise<SourceImage[]> {
  const images: SourceImage[] = [];
  for (const [i, c] of dataset.concepts.entries()) {
    for (const img of await read(c.folder, c.captionExtensions)) images.push({ ...img, concept: i, repeats: c.repeats });
  }
  return images;
}

/** A concept as config.json and the run log list it. */
export interface ConceptSummary {
  name: string;
  folder: string;
  repeats: number;
  /** Training images (held-out ones not counted). */
  images: number;
  heldOut?: number;
  prompt?: string;
  class?: string;
  token?: string;
  initToken?: string;
}

export function conceptSummaries(dataset: ConceptDataset, train: readonly SourceImage[], heldOut: readonly SourceImage[]): ConceptSummary[] {
  return dataset.concepts.map((c, i) => {
    const held = heldOut.filter((img) => img.concept === i).length;
    return {
      name: c.name,
      folder: c.folder,
      repeats: c.repeats,
      images: train.filter((img) => img.concept === i).length,
      ...(held > 0 && { heldOut: held }),
      ...(c.prompt !== undefined && { prompt: c.prompt }),
      ...(c.className !== undefined && { class: c.className }),
      ...(c.token !== undefined && { token: c.token }),
      ...(c.initToken !== undefined && { initToken: c.initToken }),
    };
  });
}

/** The run log's line for a concept: what it learns, from how many images, how often per epoch. */
export function describeConcept(c: ConceptSummary): string {
  const what = c.token ?? `"${c.prompt}"${c.class ? ` (class ${c.class})` : ''}`;
  return `concept ${path.basename(c.folder)}: ${what}, ${c.images} image(s) × ${c.repeats} repeat(s) = ${c.images * c.repeats} per epoch`;
}
