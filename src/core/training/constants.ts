/**
 * Training facts that both the training code (train/) and the memory estimate (core/memory)
 * depend on; described once here.
 */

/** Views per training image when not centre-cropping: seeded random crops, each also mirrored when flipping. */
export const RANDOM_CROPS_PER_IMAGE = 4;

/** Validation grids during training: this many images, sampled this many at a time, in this many steps. */
export const VALIDATION_IMAGES = 4;
export const VALIDATION_BATCH = 2;
export const VALIDATION_STEPS = 20;
