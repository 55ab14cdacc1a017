/**
 * Aspect-ratio buckets as kohya's sd-scripts makes them (library/model_util.py
 * make_bucket_resolutions, train_util.py BucketManager): sizes of about the training area
 * res × res in steps of `step` pixels between `min` and `max` on a side; each image goes to the
 * bucket whose aspect ratio is nearest its own, is resized to cover it and cropped to it. A batch
 * takes its images from one bucket, so its latents share a shape.
 */
import type { Rng } from '../random.js';

export interface BucketSpec {
  /** The training resolution: buckets hold about resolution² pixels. */
  resolution: number;
  min: number;
  max: number;
  step: number;
}

/** A bucket's size in pixels, [width, height]. */
export type Bucket = readonly [number, number];

/** kohya's make_bucket_resolutions: the square, then every width from min to max in steps with its height. */
export function makeBuckets(s: BucketSpec): Bucket[] {
  const area = s.resolution * s.resolution;
  const sizes = new Map<string, Bucket>();
  const add = (w: number, h: number) => sizes.set(`${w}x${h}`, [w, h]);
  const side = Math.floor(Math.sqrt(area) / s.step) * s.step;
  add(side, side);
  for (let w = s.min; w <= s.max; w += s.step) {
    const h = Math.min(s.max, Math.floor(Math.floor(area / w) / s.step) * s.step);
    if (h >= s.min) {
      add(w, h);
      add(h, w);
    }
  }
  return [...sizes.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}

/** The bucket whose aspect ratio is nearest the image's (the first such, as numpy's argmin). */
export function selectBucket(buckets: readonly Bucket[], width: number, height: number): Bucket {
  const ar = width / height;
  let best = buckets[0]!;
  let err = Infinity;
  for (const b of buckets) {
    const e = Math.abs(b[0] / b[1] - ar);
    if (e < err) {
      best = b;
      err = e;
    }
  }
  return best;
}

export interface BatchSamplerState {
  batches: number[][];
  pos: number;
}

/**
 * Epochs of batches drawn bucket by bucket: each epoch shuffles every bucket's images, cuts them
 * into batches of `batch` (the last of a bucket may be smaller, as kohya's), and shuffles the
 * batches. Its state survives a resume.
 */
export class BucketBatchSampler {
  private batches: number[][] = [];
  private pos = 0;
  constructor(
    private readonly groups: readonly (readonly number[])[],
    private readonly batch: number,
  ) {}
  next(rng: Rng): number[] {
    if (this.pos >= this.batches.length) {
      const batches: number[][] = [];
      for (const g of this.groups) {
        const order = rng.shuffle(g);
        for (let i = 0; i < order.length; i += this.batch) batches.push(order.slice(i, i + this.batch));
      }
      this.batches = rng.shuffle(batches);
      this.pos = 0;
    }
    return this.batches[this.pos++]!;
  }
  state(): BatchSamplerState {
    return { batches: this.batches, pos: this.pos };
  }
  restore(s: BatchSamplerState): void {
    this.batches = s.batches;
    this.pos = s.pos;
  }
}

/** Images grouped by bucket (indices into `buckets`' order of first appearance), for the sampler and the log. */
export function groupByBucket(buckets: readonly (Bucket | undefined)[]): { bucket: Bucket; images: number[] }[] {
  const groups = new Map<string, { bucket: Bucket; images: number[] }>();
  buckets.forEach((b, i) => {
    if (!b) return;
    const key = `${b[0]}x${b[1]}`;
    const g = groups.get(key) ?? { bucket: b, images: [] };
    g.images.push(i);
    groups.set(key, g);
  });
  return [...groups.values()].sort((a, b) => a.bucket[0] - b.bucket[0] || a.bucket[1] - b.bucket[1]);
}
