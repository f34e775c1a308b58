// The tfjs-layers model troupe trains and serves, declared by the members troupe's API relies on. Not imported from
// @tensorflow/tfjs-layers in a public type: that package's declarations fail `strict` checks, so naming it in ours
// would fail every strict project that compiles without skipLibCheck, tfjs user or not. A LayersModel fits it.
import type { Tensor } from '@tensorflow/tfjs-core';

/** A tfjs-layers model: what `tf.sequential()`, `tf.model()` or `tf.loadLayersModel()` give. */
export interface LayersModelLike {
  predict(x: Tensor | Tensor[], args?: object): Tensor | Tensor[];
  getWeights(trainableOnly?: boolean): Tensor[];
  setWeights(weights: Tensor[]): void;
}
