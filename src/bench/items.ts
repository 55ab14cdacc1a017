/** What `painter bench` can time (run-bench.ts times them; the option table lists them). */
export const BENCH_ITEMS = ['unet-train-step', 'ti-step', 'unet-forward', 'generate', 'vae-encode', 'vae-decode', 'matmul'] as const;
export type BenchItem = (typeof BENCH_ITEMS)[number];
