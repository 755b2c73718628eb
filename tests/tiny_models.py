"""Tiny random models saved the way users' folders are (the fixtures in conftest.py hand them out)."""

import string

import torch

from story_pipeline.models.video_unet import ToyVideoUNet, make_scheduler

TINY_VIDEO_UNET = dict(block_out_channels=(16, 16, 32, 32), num_attention_heads=(1, 1, 2, 2),
                       motion_num_attention_heads=(1, 1, 2, 2), structure_channels=(8, 8, 16, 16), norm_num_groups=4)


def save_tiny_video_model(folder, seed: int = 0):
    """A random ToyVideoUNet whose structure encoder is not zero (so depth changes the output)."""
    torch.manual_seed(seed)
    model = ToyVideoUNet(**TINY_VIDEO_UNET)
    for conv in model.structure.out:
        torch.nn.init.normal_(conv.weight, std=0.5)
    model.save_pretrained(folder)
    make_scheduler().save_pretrained(folder / "scheduler")
    return folder


TINY_SD_UNET = dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, norm_num_groups=8,
             attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"))


def tiny_tokenizer():
    """A CLIP BPE tokenizer over single letters (every lowercase word tokenizes), built offline."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    merges = [("c", "a"), ("ca", "t</w>")]
    vocab["ca"], vocab["cat</w>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


def save_tiny_pipeline(folder, seed: int = 0):
    from diffusers import (AutoencoderKL, ControlNetModel, MotionAdapter, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_SD_UNET, sample_size=16, in_channels=4, out_channels=4,
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    # a 3-level VAE (4x down) keeps the latents at 16x16 for 64x64 frames: fast attention
    vae = AutoencoderKL(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=8)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=37,
                                                num_attention_heads=4, num_hidden_layers=2,
                                                max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                                pad_token_id=1))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)  # as Stable Diffusion 1.5 ships it
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(), unet=unet,
                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_norm_num_groups=8,
                  motion_num_attention_heads=2, motion_max_seq_length=8).save_pretrained(folder / "motion_adapter")
    controlnet = ControlNetModel(**TINY_SD_UNET, in_channels=4, conditioning_embedding_out_channels=(8, 16, 16))  # 4x down too
    # ControlNet's output convolutions start at zero (depth would change nothing): make them random
    for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(conv.weight, std=0.3)
    controlnet.save_pretrained(folder / "controlnet")
    return folder


