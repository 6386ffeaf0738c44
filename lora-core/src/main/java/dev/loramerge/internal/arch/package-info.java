/**
 * Generates architecture descriptors from the published model configs bundled under {@code
 * dev/loramerge/arch/}: a walk of diffusers' {@code UNet2DConditionModel} and of transformers'
 * CLIP text models that lists every Linear and Conv2d layer with its shape, original checkpoint
 * name and LBW block, and kohya's names for them. Not an API: {@link dev.loramerge.arch.Architecture}
 * is.
 */
package dev.loramerge.internal.arch;
