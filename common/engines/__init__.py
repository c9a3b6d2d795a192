"""Ignite training: one GAN trainer for every paper, the downstream classifier trainer, shared handlers."""

# so that `$import common.engines` in a bundle config reaches `common.engines.recipes.*` and `.model_file.*`
from common.engines import model_file, recipes
from common.engines.classifier_training import ClassifierRecipe, evaluate_classifier, fit_classifier, predict_probs
from common.engines.gan_engine import GANTrainer, make_ema, prepare_gan_batch
from common.engines.gan_training import (
    MIN_EPOCH_STEPS,
    GANDataLoader,
    GANRecipe,
    epoch_padding,
    fit_gan,
    fit_gans,
    gan_dataloader,
    gan_trainer,
    load_generators,
)
from common.engines.generation import GeneratorEvaluator, LatentDataset, SyntheticSetWriter, generate_synthetic_set
from common.engines.handlers import LossHistory, NaNGuard, SampleGridSaver, attach_resume, latest_checkpoint
from common.engines.multistage import LAPGANRecipe, PyramidLevel

__all__ = [
    "MIN_EPOCH_STEPS",
    "ClassifierRecipe",
    "GANDataLoader",
    "GANRecipe",
    "GANTrainer",
    "GeneratorEvaluator",
    "LAPGANRecipe",
    "PyramidLevel",
    "LatentDataset",
    "SyntheticSetWriter",
    "LossHistory",
    "NaNGuard",
    "SampleGridSaver",
    "attach_resume",
    "evaluate_classifier",
    "fit_classifier",
    "epoch_padding",
    "fit_gan",
    "fit_gans",
    "gan_dataloader",
    "gan_trainer",
    "generate_synthetic_set",
    "latest_checkpoint",
    "load_generators",
    "make_ema",
    "model_file",
    "predict_probs",
    "prepare_gan_batch",
    "recipes",
]
