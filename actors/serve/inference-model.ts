// What an inference pool serves: how to load the model and the shape of one input. Defined at the top level of a
// module and exported, like training jobs, so that serving replicas on any node can load it.
import type { Tensor } from '@tensorflow/tfjs-core';
import type { LayersModelLike } from '../library/layers-model.ts';
import { declareSpec, type ExportedSpec } from '../library/exported-spec.ts';
import { UsageError } from '../library/runtime.ts';

/** M: the model's own type, so that predict() sees what model() gives. */
export interface InferenceModelSpec<M extends LayersModelLike = LayersModelLike> {
  /** Loads the model; each replica calls it once, before it takes requests. */
  model(): M | Promise<M>;
  /** The shape of one input, without the batch dimension (e.g. [28, 28, 1]). */
  inputShape: number[];
  /** Runs a batch ([n, ...inputShape]) and returns [n, ...]; default: model.predict. */
  predict?(model: M, batch: Tensor): Tensor;
}

export type InferenceModel = ExportedSpec<InferenceModelSpec>;

/** Declares a model to serve. Export the result from its module (not from the script that calls init()). */
export function inferenceModel<M extends LayersModelLike>(spec: InferenceModelSpec<M>): InferenceModel {
  if (typeof spec?.model !== 'function') throw new UsageError("inferenceModel(): 'model' must be a function");
  if (!Array.isArray(spec.inputShape) || !spec.inputShape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new UsageError(
      `inferenceModel(): 'inputShape' must be an array of positive integers, got ${JSON.stringify(spec.inputShape)}`,
    );
  }
  if (spec.predict !== undefined && typeof spec.predict !== 'function')
    throw new UsageError("inferenceModel(): 'predict' must be a function");
  return declareSpec(spec, 'the inference model');
}
