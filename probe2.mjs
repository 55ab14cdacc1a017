import * as tf from '@tensorflow/tfjs';
const { selectBackend } = await import('./dist/src/backend/select.js');
const { releaseWebgpu } = await import('./dist/src/backend/webgpu.js');
await selectBackend('webgpu');
const x = tf.add(tf.ones([4]), 1); console.log(await x.data());
const mode = process.argv[2];
if (mode === 'destroy') { const b = tf.findBackend('webgpu'); tf.removeBackend('webgpu'); b.device.destroy(); }
if (mode !== 'keep') releaseWebgpu();
console.log('end', mode);
