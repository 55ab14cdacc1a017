/**
 * DreamBooth on several subjects in one run (a concept dataset, as kohya's DreamBooth folders or
 * diffusers' multi-subject requests): each subject's instance rows use its own prompt, and each
 * is paired with a class row of its own subject's class (each class its own class images).
 * A run of one subject is the one-class layout: every image has the instance prompt, every
 * class image the class prompt.
 */
import type { SourceImage } from '../io/dataset.js';

export interface SubjectSettings {
  /** Per concept (SourceImage.concept): its instance prompt, filled in, and its class (an index into `classes`). */
  concepts: readonly { instancePrompt: string; classIndex: number }[];
  /** Per class: its class prompt, filled in, and its class images (indices into the class images). */
  classes: readonly { classPrompt: string; images: readonly number[] }[];
}

export interface SubjectLayout {
  /** An instance image's prompt (before its caption). */
  instancePrompt(img: SourceImage): string;
  /** The class of an instance image. */
  classOf(img: SourceImage): number;
  /** Per class: its prompt and its class images. */
  classes: readonly { classPrompt: string; images: readonly number[] }[];
  /** The class of each class image. */
  classOfClassImage: number[];
}

/** The layout of a run: `subjects`' concepts and classes, or one subject with `instancePrompt` and `classPrompt`. */
export function subjectLayout(subjects: SubjectSettings | undefined, one: { instancePrompt: string; classPrompt: string }, classImages: number): SubjectLayout {
  const classes = subjects?.classes ?? [{ classPrompt: one.classPrompt, images: Array.from({ length: classImages }, (_, i) => i) }];
  const classOfClassImage = Array<number>(classImages).fill(0);
  classes.forEach((c, k) => c.images.forEach((i) => (classOfClassImage[i] = k)));
  const concept = (img: SourceImage) => {
    const c = subjects?.concepts[img.concept ?? 0];
    if (subjects && !c) throw new RangeError(`an image of concept ${img.concept} in a run of ${subjects.concepts.length} concepts`);
    return c;
  };
  return {
    instancePrompt: (img) => concept(img)?.instancePrompt ?? one.instancePrompt,
    classOf: (img) => concept(img)?.classIndex ?? 0,
    classes,
    classOfClassImage,
  };
}
